package statuspage

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/loginguard"
)

// fixedSource returns a copy of its report, or its error.
type fixedSource struct {
	r   Report
	err error
}

func (f *fixedSource) Report(context.Context) (*Report, error) {
	if f.err != nil {
		return nil, f.err
	}
	r := f.r
	return &r, nil
}

func sampleReport() Report {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return Report{
		Version: ReportVersion, Generated: now, Alarms: []string{},
		IMAP: IMAPSettings{Host: "127.0.0.1", Port: 1143, User: "alice", PasswordFile: "/home/alice/mail.db.password"},
		Sync: SyncState{State: StateBehind, Position: 40, Head: 42, Lag: 2, Connected: true, LastContact: now.Add(-3 * time.Second), Applied: 40},
		Mailboxes: []Mailbox{
			{Name: "INBOX", Messages: 7, Unseen: 3, Size: 20480},
			{Name: "<script>alert(1)</script>", Messages: 1},
		},
		Rejected: Rejections{Count: 1, Recent: []Rejection{{Pos: 12, Reason: "bad signature", At: now}}},
	}
}

// serve starts the handler on a real 127.0.0.1 listener.
func serve(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, method, url, user, pass string, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestAuthAndHeaders(t *testing.T) {
	t.Parallel()
	src := &fixedSource{r: sampleReport()}
	srv := serve(t, Config{Source: src, User: "alice", Password: "s3cret", Hosts: []string{"127.0.0.1", "localhost"}})
	cases := []struct {
		name, method, path, user, pass, host string
		want                                 int
	}{
		{"no credentials", "GET", "/", "", "", "", http.StatusUnauthorized},
		{"wrong password", "GET", "/", "alice", "s3creT", "", http.StatusUnauthorized},
		{"password prefix", "GET", "/", "alice", "s3cre", "", http.StatusUnauthorized},
		{"wrong user", "GET", "/status.json", "bob", "s3cret", "", http.StatusUnauthorized},
		{"page", "GET", "/", "alice", "s3cret", "", http.StatusOK},
		{"json", "GET", "/status.json", "alice", "s3cret", "", http.StatusOK},
		{"head", "HEAD", "/", "alice", "s3cret", "", http.StatusOK},
		{"localhost name", "GET", "/", "alice", "s3cret", "localhost:1144", http.StatusOK},
		{"rebound name", "GET", "/", "alice", "s3cret", "evil.example:1144", http.StatusMisdirectedRequest},
		{"other path", "GET", "/favicon.ico", "alice", "s3cret", "", http.StatusNotFound},
		{"post", "POST", "/", "alice", "s3cret", "", http.StatusMethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := get(t, c.method, srv.URL+c.path, c.user, c.pass, c.host)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, c.want, body)
			}
			if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			csp := resp.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy %q, want default-src 'none'", csp)
			}
			if c.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 without a Basic challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if c.want != http.StatusOK && strings.Contains(body, "INBOX") {
				t.Errorf("refused request got the report: %q", body)
			}
		})
	}
}

func TestPage(t *testing.T) {
	t.Parallel()
	src := &fixedSource{r: sampleReport()}
	srv := serve(t, Config{Source: src, User: "alice", Password: "s3cret", Refresh: 3 * time.Second})
	resp, body := get(t, "GET", srv.URL+"/", "alice", "s3cret", "")
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="3">`,
		`<span id="user">alice</span>`,
		`<td id="imap-port" class="mono">1143</td>`,
		`<span id="position" class="mono">40</span>`,
		`<span id="head" class="mono">42</span>`,
		`<span id="lag" class="warn">2</span>`,
		`<tr data-mailbox="INBOX">`,
		`data-messages="7"`,
		`&lt;script&gt;alert(1)&lt;/script&gt;`,
		`/home/alice/mail.db.password`,
		`bad signature`,
		`connected`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "s3cret") {
		t.Error("page carries a script tag or the password")
	}
	if strings.Contains(body, `class="alarm"`) {
		t.Error("page shows an alarm, want none")
	}
	// The CSP allows exactly the inline style the page carries.
	m := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("page has no style element")
	}
	sum := sha256.Sum256([]byte(m[1]))
	want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, want) {
		t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
	}

	src.r.Alarms = []string{"the spool's log has a gap"}
	_, body = get(t, "GET", srv.URL+"/", "alice", "s3cret", "")
	if !strings.Contains(body, `<div class="alarm" role="alert">Integrity alarm: the spool&#39;s log has a gap</div>`) {
		t.Errorf("alarm not shown; page:\n%s", body)
	}
	if !strings.Contains(body, "<title>ALARM - ") {
		t.Error("alarm not in the title")
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	src := &fixedSource{r: sampleReport()}
	srv := serve(t, Config{Source: src, User: "alice", Password: "s3cret"})
	resp, body := get(t, "GET", srv.URL+"/status.json", "alice", "s3cret", "")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got Report
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	want := sampleReport()
	if got.Version != ReportVersion || got.Sync != want.Sync || got.IMAP != want.IMAP ||
		len(got.Mailboxes) != 2 || got.Mailboxes[0] != want.Mailboxes[0] || got.Rejected.Count != 1 ||
		got.Rejected.Recent[0].Pos != 12 || !got.Generated.Equal(want.Generated) {
		t.Errorf("JSON gave %+v, want %+v", got, want)
	}
}

func TestSourceFailure(t *testing.T) {
	t.Parallel()
	srv := serve(t, Config{Source: &fixedSource{err: errors.New("database is locked at /secret/path")}, User: "alice", Password: "s3cret"})
	resp, body := get(t, "GET", srv.URL+"/status.json", "alice", "s3cret", "")
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(body, "/secret/path") {
		t.Errorf("status %d body %q, want 500 without the detail", resp.StatusCode, body)
	}
}

func TestEmptyPassword(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{Source: &fixedSource{}, User: "alice"}); err == nil {
		t.Error("New accepted an empty password without AllowEmptyPassword")
	}
	srv := serve(t, Config{Source: &fixedSource{r: sampleReport()}, User: "alice", AllowEmptyPassword: true})
	if resp, _ := get(t, "GET", srv.URL+"/", "alice", "", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("empty password allowed: status %d, want 200", resp.StatusCode)
	}
	if resp, _ := get(t, "GET", srv.URL+"/", "", "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no credentials: status %d, want 401", resp.StatusCode)
	}
}

func TestAge(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "just now"}, {3 * time.Second, "3 s ago"}, {90 * time.Second, "1 min ago"},
		{5 * time.Hour, "5 h ago"}, {72 * time.Hour, "3 days ago"},
	} {
		if got := age(c.d); got != c.want {
			t.Errorf("age(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}} {
		if got := humanSize(c.n); got != c.want {
			t.Errorf("humanSize(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

// Guessing the IMAP password through the page is slowed as through IMAP
// and submission (docs/IMAP.md, "Login"): a wrong password is answered
// only after the guard's delay, doubling per failure of the source, and
// while the guard's most failures of one source wait, every login from it
// is refused unchecked, the right password too. The page answered every
// guess at once: thousands a second, past the guard of the other two.
func TestFailedLoginsSlowed(t *testing.T) {
	t.Parallel()
	src := &fixedSource{r: sampleReport()}
	waits := make(chan time.Duration, 16)
	srv := serve(t, Config{Source: src, User: "alice", Password: "s3cret", Login: loginguard.Limits{
		Wait: func(_ context.Context, d time.Duration) error { waits <- d; return nil },
	}})
	for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		resp, body := get(t, "GET", srv.URL+"/", "alice", "guess", "")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: status %d, want 401 (body %q)", i+1, resp.StatusCode, body)
		}
		select {
		case d := <-waits:
			if d != want {
				t.Errorf("guess %d: answered after a delay of %v, want %v", i+1, d, want)
			}
		default:
			t.Fatalf("guess %d: answered with no delay, want %v", i+1, want)
		}
	}
	if resp, _ := get(t, "GET", srv.URL+"/", "", "", ""); resp.StatusCode != http.StatusUnauthorized || len(waits) != 0 {
		t.Errorf("no credentials: status %d and %d delays, want 401 at once", resp.StatusCode, len(waits))
	}
	if resp, _ := get(t, "GET", srv.URL+"/", "alice", "s3cret", ""); resp.StatusCode != http.StatusOK || len(waits) != 0 {
		t.Errorf("the right password: status %d and %d delays, want 200 at once", resp.StatusCode, len(waits))
	}

	// Four guesses waiting at once: the next login is refused unchecked.
	held := make(chan time.Duration)
	release := make(chan struct{})
	srv2 := serve(t, Config{Source: src, User: "alice", Password: "s3cret", Login: loginguard.Limits{
		Wait: func(_ context.Context, d time.Duration) error { held <- d; <-release; return nil },
	}})
	codes := make(chan int, 4)
	for i := 0; i < 4; i++ {
		go func() {
			req, _ := http.NewRequest("GET", srv2.URL+"/", nil)
			req.SetBasicAuth("alice", "guess")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for i := 0; i < 4; i++ {
		<-held
	}
	resp, body := get(t, "GET", srv2.URL+"/", "alice", "s3cret", "")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a login while four guesses wait: status %d, Retry-After %q, want 429 with Retry-After (body %q)",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	close(release)
	for i := 0; i < 4; i++ {
		if c := <-codes; c != http.StatusUnauthorized {
			t.Errorf("a waiting guess: status %d, want 401", c)
		}
	}
	if resp, _ := get(t, "GET", srv2.URL+"/", "alice", "s3cret", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("the right password once the guesses are answered: status %d, want 200", resp.StatusCode)
	}
}

// countingSource counts the reports built.
type countingSource struct {
	fixedSource
	n atomic.Int64
}

func (c *countingSource) Report(ctx context.Context) (*Report, error) {
	c.n.Add(1)
	return c.fixedSource.Report(ctx)
}

// TestOtherSitesRefused: a page of another site that has the user's
// browser load the report (an <img>, a fetch, a frame), the login the
// browser keeps for the address sent along, gets 403 and builds no
// report; an address typed in, the page's own refresh, a link followed
// from elsewhere, and clients that are no browser are served.
func TestOtherSitesRefused(t *testing.T) {
	t.Parallel()
	src := &countingSource{fixedSource: fixedSource{r: sampleReport()}}
	srv := serve(t, Config{Source: src, User: "alice", Password: "s3cret", Hosts: []string{"127.0.0.1", "localhost"}})
	host := strings.TrimPrefix(srv.URL, "http://")
	cases := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"no browser", nil, http.StatusOK},
		{"typed in", map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, http.StatusOK},
		{"own refresh", map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, http.StatusOK},
		{"link from elsewhere", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, http.StatusOK},
		{"image", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}, http.StatusForbidden},
		{"fetch", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"frame", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}, http.StatusForbidden},
		{"same site, other port", map[string]string{"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}, http.StatusForbidden},
		{"old browser, other origin", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"old browser, own origin", map[string]string{"Origin": "http://" + host}, http.StatusOK},
	}
	for _, c := range cases {
		req, err := http.NewRequest("GET", srv.URL+"/status.json", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("alice", "s3cret")
		for k, v := range c.headers {
			req.Header.Set(k, v)
		}
		before := src.n.Load()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d (body %q)", c.name, resp.StatusCode, c.want, body)
		}
		if built := src.n.Load() - before; c.want == http.StatusForbidden && built != 0 {
			t.Errorf("%s: refused, yet %d report(s) built", c.name, built)
		}
	}
}
