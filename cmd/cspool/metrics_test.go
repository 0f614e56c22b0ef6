package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"cspool/internal/api"
	"cspool/internal/deliver"
	"cspool/internal/keys"
	"cspool/internal/spool"
)

// scrape fetches /metrics in the text format and parses it with expfmt.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scraping %s: status %d, %v", url, resp.StatusCode, err)
	}
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeTextPlain {
		t.Errorf("Content-Type %q, want the text format", resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams, string(body)
}

// value returns one sample's value, 0 when the series does not exist yet:
// sample is the family's name for a counter or gauge, or the family's name
// with _count or _sum for a histogram.
func value(fams map[string]*dto.MetricFamily, family, sample string, labels map[string]string) float64 {
	f := fams[family]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case sample == family && m.Counter != nil:
			return m.Counter.GetValue()
		case sample == family && m.Gauge != nil:
			return m.Gauge.GetValue()
		case sample == family+"_count" && m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case sample == family+"_sum" && m.Histogram != nil:
			return m.Histogram.GetSampleSum()
		}
	}
	return 0
}

// TestServerMetrics runs `cspool server --metrics-addr`, makes deliveries
// (LMTP and HTTP), appends, a long-poll and refused requests, and checks
// that /metrics counts each of them and names no user.
func TestServerMetrics(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	alice, bob, spoolK, stranger := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	usersPath := filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	spoolSec := filepath.Join(dir, "spool.sec")
	if err := keys.WriteFiles(spoolK, spoolSec, filepath.Join(dir, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServer(t, bin, "--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath,
		"--spool-key", spoolSec, "--lmtp", lmtpAddr, "--metrics-addr", metricsAddr)
	url := "http://" + metricsAddr + "/metrics"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	before, _ := scrape(t, url)
	for _, name := range []string{"cspool_deliveries_total", "cspool_store_append_seconds", "cspool_longpolls_open",
		"cspool_auth_failures_total", "cspool_http_requests_total", "cspool_store_size_bytes", "cspool_sqlite_commits_total"} {
		if before[name] == nil {
			t.Errorf("family %s missing before any traffic", name)
		}
	}

	client := func(user string, k *keys.SecretKey) *api.Client {
		c, err := api.NewClient(p.url, user, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ac := client("alice", alice)
	if _, err := ac.Append(ctx, "alice", [][]byte{[]byte("from a device")}); err != nil {
		t.Fatal(err)
	}
	if _, err := client("", spoolK).Append(ctx, "alice", [][]byte{sealDelivery(t, spoolK, alice.Public(), "alice", "delivered over HTTP")}); err != nil {
		t.Fatal(err)
	}
	if _, err := client("alice", stranger).Head(ctx); !errors.Is(err, api.ErrUnauthenticated) {
		t.Errorf("stranger: %v, want ErrUnauthenticated", err)
	}
	if _, err := client("bob", alice).Head(ctx); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("alice on bob's log: %v, want ErrForbidden", err)
	}

	// A long-poll is open while it waits, and closed once mail arrives.
	polled := make(chan error, 1)
	go func() {
		es, _, err := ac.Read(ctx, 2, 0, 0, 30*time.Second)
		if err == nil && len(es) != 1 {
			err = fmt.Errorf("long-poll returned %d entries, want 1", len(es))
		}
		polled <- err
	}()
	waitMetric(t, url, "cspool_longpolls_open", nil, 1)

	lmtpSendOne(t, lmtpAddr, "alice@example.org", 0)
	lmtpSendOne(t, lmtpAddr, "nobody@example.org", 550)
	if err := <-polled; err != nil {
		t.Fatalf("long-poll: %v", err)
	}
	waitMetric(t, url, "cspool_longpolls_open", nil, 0)

	after, text := scrape(t, url)
	checks := []struct {
		family, sample string
		labels         map[string]string
		want           float64
	}{
		{"cspool_deliveries_total", "cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "ok"}, 1},
		{"cspool_deliveries_total", "cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "unknown_user"}, 1},
		{"cspool_deliveries_total", "cspool_deliveries_total", map[string]string{"via": "http", "outcome": "ok"}, 1},
		{"cspool_auth_failures_total", "cspool_auth_failures_total", map[string]string{"reason": "unknown_key"}, 1},
		{"cspool_auth_failures_total", "cspool_auth_failures_total", map[string]string{"reason": "forbidden"}, 1},
		{"cspool_http_requests_total", "cspool_http_requests_total", map[string]string{"method": "POST", "route": "/v1/users/{user}/entries", "status": "200"}, 2},
		{"cspool_http_requests_total", "cspool_http_requests_total", map[string]string{"method": "GET", "route": "/v1/users/{user}/head", "status": "401"}, 1},
		{"cspool_http_requests_total", "cspool_http_requests_total", map[string]string{"method": "GET", "route": "/v1/users/{user}/entries", "status": "200"}, 1},
		{"cspool_store_append_seconds", "cspool_store_append_seconds_count", map[string]string{"via": "http"}, 2},
		{"cspool_store_append_seconds", "cspool_store_append_seconds_count", map[string]string{"via": "lmtp"}, 1},
		{"cspool_sqlite_entries_total", "cspool_sqlite_entries_total", nil, 3},
	}
	for _, c := range checks {
		if got := value(after, c.family, c.sample, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.sample, c.labels, got, c.want)
		}
	}
	if size := value(after, "cspool_store_size_bytes", "cspool_store_size_bytes", map[string]string{"backend": "sqlite"}); size <= 0 {
		t.Errorf("cspool_store_size_bytes{backend=sqlite} = %v, want > 0", size)
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines", "go_gc_duration_seconds"} {
		if after[name] == nil {
			t.Errorf("family %s missing: the process and Go runtime collectors", name)
		}
	}
	// A scraper that asks for OpenMetrics gets it; the figures are the same
	// (expfmt's parser of it is checked in internal/metrics).
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Error(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeOpenMetrics ||
			!strings.HasSuffix(string(body), "# EOF\n") || !strings.Contains(string(body), "\n# TYPE cspool_deliveries counter\n") {
			t.Errorf("OpenMetrics asked: Content-Type %q, body:\n%s", resp.Header.Get("Content-Type"), body)
		}
	}
	if resp, err := http.Post(url, "text/plain", nil); err != nil {
		t.Error(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: status %d, want 405", resp.StatusCode)
	}
	for _, secret := range []string{"alice", "bob", "nobody", "example.org", "Subject"} {
		if strings.Contains(text, secret) {
			t.Errorf("/metrics mentions %q", secret)
		}
	}
	p.stop(t)
	if log := p.stderr.String(); !strings.Contains(log, "metrics=http://"+metricsAddr+"/metrics") {
		t.Errorf("start line lacks the metrics address:\n%s", log)
	}
}

// lmtpSendOne delivers one message to rcpt over its own connection and
// checks the reply code (0: success).
func lmtpSendOne(t *testing.T, addr, rcpt string, wantCode int) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	lc := smtp.NewClientLMTP(conn)
	defer lc.Close()
	err = lc.SendMail("sender@example.net", []string{rcpt}, strings.NewReader("Subject: hi\r\n\r\nbody\r\n"))
	var se *smtp.SMTPError
	switch {
	case wantCode == 0 && err != nil:
		t.Fatalf("LMTP to %s: %v", rcpt, err)
	case wantCode != 0 && (!errors.As(err, &se) || se.Code != wantCode):
		t.Fatalf("LMTP to %s: %v, want %d", rcpt, err, wantCode)
	}
}

// waitMetric scrapes until the sample has the value (bounded: 20 s).
func waitMetric(t *testing.T, url, name string, labels map[string]string, want float64) {
	t.Helper()
	var got float64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		fams, _ := scrape(t, url)
		if got = value(fams, name, name, labels); got == want {
			return
		}
	}
	t.Fatalf("%s%v stayed %v, want %v", name, labels, got, want)
}

// TestServerMetricsOff checks that no metrics listener exists by default.
func TestServerMetricsOffByDefault(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	p := startServer(t, bin, "--spool-dir", filepath.Join(t.TempDir(), "spool"))
	p.stop(t)
	if log := p.stderr.String(); !strings.Contains(log, "metrics=off") {
		t.Errorf("start line does not say metrics=off:\n%s", log)
	}
}

// TestServerCheckpointMetrics runs `cspool server` with a small
// --max-checkpoint-size, uploads a checkpoint over it (413) and one within
// it (stored), and checks on /metrics that the refusal is counted as
// too_large, none for memory, and that no bytes are held or uploads
// waiting once both are answered.
func TestServerCheckpointMetrics(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	alice := mustKey(t)
	usersPath := filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice})
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	const limit = 52000
	p := startServer(t, bin, "--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath,
		"--max-checkpoint-size", fmt.Sprint(limit), "--metrics-addr", metricsAddr)
	url := "http://" + metricsAddr + "/metrics"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	before, _ := scrape(t, url)
	for _, name := range []string{"cspool_checkpoint_uploads_held_bytes", "cspool_checkpoint_uploads_waiting", "cspool_checkpoint_refusals_total"} {
		if before[name] == nil {
			t.Errorf("family %s missing before any upload", name)
		}
	}
	c, err := api.NewClient(p.url, "alice", alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "alice", [][]byte{[]byte("one"), []byte("two"), []byte("three")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.PutCheckpoint(ctx, spool.Checkpoint{Pos: 2, Data: make([]byte, limit)}, []uint64{1})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 413 {
		t.Fatalf("upload over the limit: %v, want 413", err)
	}
	if _, err := c.PutCheckpoint(ctx, spool.Checkpoint{Pos: 2, Data: make([]byte, 1000)}, []uint64{1}); err != nil {
		t.Fatalf("upload within the limit: %v", err)
	}

	after, _ := scrape(t, url)
	for _, tc := range []struct {
		family string
		labels map[string]string
		want   float64
	}{
		{"cspool_checkpoint_refusals_total", map[string]string{"reason": "too_large"}, 1},
		{"cspool_checkpoint_refusals_total", map[string]string{"reason": "memory"}, 0},
		{"cspool_checkpoint_uploads_held_bytes", nil, 0},
		{"cspool_checkpoint_uploads_waiting", nil, 0},
		{"cspool_http_requests_total", map[string]string{"method": "PUT", "route": "/v1/users/{user}/checkpoint", "status": "413"}, 1},
		{"cspool_http_requests_total", map[string]string{"method": "PUT", "route": "/v1/users/{user}/checkpoint", "status": "200"}, 1},
	} {
		if got := value(after, tc.family, tc.family, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.family, tc.labels, got, tc.want)
		}
	}
	for _, name := range []string{"cspool_checkpoint_uploads_held_bytes", "cspool_checkpoint_uploads_waiting"} {
		if f := after[name]; f == nil || len(f.GetMetric()) != 1 {
			t.Errorf("%s: not one series after the uploads", name)
		}
	}
}

// TestServerAppendMemory: --append-memory sets the server's budget of
// append bodies held at once, and /metrics counts the appends it refuses.
// With the budget at its least (the largest append), an append of alice's
// that announced the largest body and sent a few bytes holds all of it:
// bob's append waits and gets 503 (under the default budget of four times
// as much it would have room), and her next one gets 429 (her share). Before,
// the server had no flag for it, and neither refusal was counted.
func TestServerAppendMemory(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	alice, bob := mustKey(t), mustKey(t)
	usersPath := filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	maxBody := serverMaxBody(deliver.DefaultMaxMessageBytes)
	p := startServer(t, bin, "--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath,
		"--append-memory", fmt.Sprint(maxBody), "--metrics-addr", metricsAddr)
	url := "http://" + metricsAddr + "/metrics"
	before, _ := scrape(t, url)
	for _, reason := range api.AppendRefusals {
		if f := before["cspool_append_refusals_total"]; f == nil || value(before, "cspool_append_refusals_total", "cspool_append_refusals_total", map[string]string{"reason": reason}) != 0 {
			t.Errorf("cspool_append_refusals_total{reason=%q} not at 0 before any append", reason)
		}
	}
	body := api.EncodeBatch([][]byte{[]byte("x")})
	var ts time.Time // the signing time: the earliest the server takes (restart rule)
	signed := func(user string, key *keys.SecretKey) *http.Request {
		req, err := http.NewRequest("POST", p.url+"/v1/users/"+user+"/entries", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", api.ContentType)
		at := time.Now()
		if ts.After(at) {
			at = ts
		}
		if err := api.SignRequest(req, body, key, at); err != nil {
			t.Fatal(err)
		}
		return req
	}
	status := func(req *http.Request) int {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if e := resp.Header.Get("Cspool-Earliest-Ts"); e != "" {
			n, err := strconv.ParseInt(e, 10, 64)
			if err != nil {
				t.Fatalf("Cspool-Earliest-Ts %q: %v", e, err)
			}
			ts = time.Unix(n, 0)
		}
		return resp.StatusCode
	}
	// The server takes no timestamp up to its start plus 30 s (503, the
	// restart rule, docs/API.md §2) and says the earliest it takes: sign
	// with that from then on.
	for deadline := time.Now().Add(10 * time.Second); status(signed("bob", bob)) == http.StatusServiceUnavailable; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bob's appends still refused with 503 10 s after the start")
		}
	}
	// alice's append announces the largest body and sends 4 bytes of it.
	held := signed("alice", alice)
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\nxxxx",
		held.URL.Path, api.ContentType, held.Header.Get("Authorization"), maxBody)
	// Once it holds the whole budget, bob's append waits for room and gets
	// 503 (before, a bob's append is taken at once). No append of alice's
	// is sent until then: one in progress as hers is read would make hers
	// over her share.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if status(signed("bob", bob)) == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bob's appends never got 503 while one of alice's announcing the largest body was being read, with --append-memory the largest body")
		}
	}
	// alice's next append is over her share: 429 at once.
	if got := status(signed("alice", alice)); got != http.StatusTooManyRequests {
		t.Fatalf("alice's append while one of hers holds her share: %d, want 429", got)
	}
	after, _ := scrape(t, url)
	if got := value(after, "cspool_append_refusals_total", "cspool_append_refusals_total", map[string]string{"reason": "memory"}); got != 1 {
		t.Errorf("cspool_append_refusals_total{reason=\"memory\"} = %v, want 1", got)
	}
	if got := value(after, "cspool_append_refusals_total", "cspool_append_refusals_total", map[string]string{"reason": "key_share"}); got != 1 {
		t.Errorf("cspool_append_refusals_total{reason=\"key_share\"} = %v, want 1", got)
	}
}
