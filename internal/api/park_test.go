package api

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// handlersServing counts the goroutines of net/http serving a connection
// (a request in its handler, or a connection waiting for its next request).
func handlersServing(t *testing.T) int {
	t.Helper()
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	for g := range strings.SplitSeq(b.String(), "\n\n") {
		if strings.Contains(g, "net/http.(*conn).serve") && strings.Contains(g, "cspool/internal/api.(*Server).read") {
			n++
		}
	}
	return n
}

// TestParkedReadsLeaveNetHTTP: long-polls that wait hold no handler of
// net/http (with its buffers and its background read) but are answered as
// before, when an entry comes and when the wait ends, and their
// connections serve the next request.
func TestParkedReadsLeaveNetHTTP(t *testing.T) {
	m := &recMetrics{}
	e := newEnv(t, false, func(c *Config) { c.MaxWait = 3 * time.Second; c.Metrics = m })
	ctx := testCtx(t)
	alice, bob := e.client(t, "alice", e.alice), e.client(t, "bob", e.bob)
	waiting := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for _, d := range m.polls {
			n += d
		}
		return n
	}
	const polls = 6
	var chs []<-chan pollResult
	for i := range polls {
		c := alice
		if i%2 == 1 {
			c = bob
		}
		chs = append(chs, startPoll(ctx, c, 0, time.Minute))
	}
	waitFor(t, "every long-poll waiting", func() bool { return waiting() == polls })
	if n := handlersServing(t); n != 0 {
		t.Errorf("%d long-polls wait in net/http's handlers, want 0 (parked)", n)
	}
	if _, err := e.store.Append(ctx, "alice", [][]byte{[]byte("news")}); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chs {
		select {
		case r := <-ch:
			switch {
			case r.err != nil:
				t.Errorf("long-poll %d: %v", i, r.err)
			case i%2 == 0 && (len(r.entries) != 1 || r.head != 1 || string(r.entries[0].Data) != "news"):
				t.Errorf("alice's long-poll %d = %d entries, head %d; want the entry appended", i, len(r.entries), r.head)
			case i%2 == 1 && (len(r.entries) != 0 || r.head != 0):
				t.Errorf("bob's long-poll %d = %d entries, head %d; want none at the end of its wait", i, len(r.entries), r.head)
			}
		case <-time.After(timeLeft(t)):
			// Bob's end with MaxWait (3 s); alice's, if not woken, too,
			// and empty: failed above.
			t.Fatalf("long-poll %d not answered", i)
		}
	}
	// The connection of an answered parked read serves the next request.
	reused := make(chan bool, 2)
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { reused <- ci.Reused }})
	if _, _, err := bob.Read(tctx, 0, 0, 0, time.Second); err != nil {
		t.Fatal(err)
	}
	<-reused
	if _, _, err := bob.Read(tctx, 0, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if !<-reused {
		t.Error("the request after a parked read's answer opened a new connection, want the same one kept alive")
	}
}

// TestDrainWaitsForParkedReads: Shutdown answers parked reads at once, and
// Drain returns once they are answered.
func TestDrainWaitsForParkedReads(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	ch := startPoll(ctx, e.client(t, "alice", e.alice), 0, longWait)
	waitFor(t, "the long-poll parked", func() bool { return e.api.parkedCount() == 1 })
	e.api.Shutdown()
	dctx, cancel := context.WithTimeout(ctx, earlyBound(t))
	defer cancel()
	if err := e.api.Drain(dctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	select {
	case r := <-ch:
		if r.err != nil || len(r.entries) != 0 {
			t.Fatalf("parked long-poll at shutdown = %d entries, %v; want an empty answer", len(r.entries), r.err)
		}
	case <-time.After(earlyBound(t)):
		t.Fatal("the parked long-poll was not answered after Drain")
	}
}

// TestParkedConnectionAuthenticatesAgain: the connection of an answered
// parked read comes back to the HTTP server as a new one and carries
// nothing of the request before: the same signed long-poll sent again on
// it is a replay (401), and one with a forged signature is refused too;
// neither parks.
func TestParkedConnectionAuthenticatesAgain(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxWait = 2 * time.Second })
	req, err := http.NewRequest("GET", e.srv.URL+"/v1/users/alice/entries", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = "after=0&wait=2"
	if err := SignRequest(req, nil, e.alice, time.Now()); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if err := req.Write(&raw); err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(raw.Bytes(), []byte("after=0&wait=2"), []byte("after=1&wait=2"), 1)
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	roundTrip := func(what string, b []byte, parks bool) *http.Response {
		t.Helper()
		if _, err := conn.Write(b); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if parks {
			waitFor(t, what+" parked", func() bool { return e.api.parkedCount() == 1 })
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := roundTrip("the long-poll", raw.Bytes(), true); resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("the long-poll: %d, close %v; want 200 on a connection kept alive", resp.StatusCode, resp.Close)
	}
	// The parked read's goroutine counts itself out after giving the
	// connection back, so the answer can reach the client first.
	waitFor(t, "the long-poll's parked read to end", func() bool { return e.api.parkedCount() == 0 })
	for _, c := range []struct {
		what string
		req  []byte
	}{{"the same request again", raw.Bytes()}, {"a forged request", forged}} {
		resp := roundTrip(c.what, c.req, false)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s on the connection a parked read was answered on: %d, want 401", c.what, resp.StatusCode)
		}
		if n := e.api.parkedCount(); n != 0 {
			t.Errorf("%s: %d reads parked, want none", c.what, n)
		}
		if resp.Close {
			break
		}
	}
}

// parkedGoroutine returns the id of the goroutine waiting for a parked
// read, or "" if there is none (or more than one).
func parkedGoroutine(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	id := ""
	for g := range strings.SplitSeq(b.String(), "\n\n") {
		if strings.Contains(g, "cspool/internal/api.(*Server).waitParked") && strings.Contains(g, "spool.WaitFor") {
			if id != "" {
				return ""
			}
			id, _, _ = strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		}
	}
	return id
}

// signedRaw returns a request of alice's, signed now, as bytes.
func signedRaw(t *testing.T, e *env, method, path, query string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = query
	if err := SignRequest(req, nil, e.alice, time.Now()); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if err := req.Write(&raw); err != nil {
		t.Fatal(err)
	}
	return raw.Bytes()
}

// TestRenewalsKeepTheirGoroutine: once a parked read is answered, the
// device's next long-poll on that connection is read, verified and waited
// for by the goroutine that answered, not handed to net/http and then to
// a new goroutine of its own.
func TestRenewalsKeepTheirGoroutine(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxWait = time.Second })
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	var ids []string
	for i := range 3 {
		if _, err := conn.Write(signedRaw(t, e, "GET", "/v1/users/alice/entries", "after=0&wait=1")); err != nil {
			t.Fatal(err)
		}
		var id string
		waitFor(t, "the long-poll parked", func() bool { id = parkedGoroutine(t); return id != "" })
		ids = append(ids, id)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("long-poll %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close || resp.Header.Get("Cspool-Head") != "0" {
			t.Fatalf("long-poll %d: %d, close %v, head %q; want 200 kept alive, head 0", i, resp.StatusCode, resp.Close, resp.Header.Get("Cspool-Head"))
		}
	}
	if ids[1] != ids[0] || ids[2] != ids[0] {
		t.Errorf("the long-polls on one connection waited on goroutines %v, want one goroutine for all", ids)
	}
}

// TestParkedConnectionServesAnyRequest: on the connection of an answered
// parked read, what is not a renewal read whole in one piece goes back to
// net/http with the bytes read of it: another route, a renewal sent in two
// parts, a request with a body (an append on a head passed); each is answered as on a fresh connection,
// and renewals between them are answered too.
func TestParkedConnectionServesAnyRequest(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxWait = time.Second })
	ctx := testCtx(t)
	if _, err := e.store.Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	check := func(what string, parts [][]byte, status int, head string) {
		t.Helper()
		for i, p := range parts {
			if i > 0 {
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := conn.Write(p); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status || resp.Close || resp.Header.Get("Cspool-Head") != head {
			t.Fatalf("%s: %d, close %v, head %q (%q); want %d kept alive, head %q", what, resp.StatusCode, resp.Close,
				resp.Header.Get("Cspool-Head"), body, status, head)
		}
	}
	renewal := func() [][]byte {
		return [][]byte{signedRaw(t, e, "GET", "/v1/users/alice/entries", "after=0&wait=1")}
	}
	check("the first long-poll", renewal(), http.StatusOK, "1")
	check("a read of the head", [][]byte{signedRaw(t, e, "GET", "/v1/users/alice/head", "")}, http.StatusOK, "1")
	check("a long-poll", renewal(), http.StatusOK, "1")
	split := renewal()[0]
	check("a long-poll in two parts", [][]byte{split[:20], split[20:]}, http.StatusOK, "1")
	check("a long-poll", renewal(), http.StatusOK, "1")
	forged := bytes.Replace(renewal()[0], []byte("after=0"), []byte("after=1"), 1)
	check("a forged long-poll", [][]byte{forged}, http.StatusUnauthorized, "")
	check("a long-poll", renewal(), http.StatusOK, "1")
	// A read carries no body (TestReadWithBodyRefused): an append on a
	// head passed long ago, answered 409 with the head, is one that does.
	body := EncodeBatch([][]byte{[]byte("late")})
	req, err := http.NewRequest("POST", e.srv.URL+"/v1/users/alice/entries?if_head=0", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ContentType)
	if err := SignRequest(req, body, e.alice, time.Now()); err != nil {
		t.Fatal(err)
	}
	var withBody bytes.Buffer
	if err := req.Write(&withBody); err != nil {
		t.Fatal(err)
	}
	check("an append with its body", [][]byte{withBody.Bytes()}, http.StatusConflict, "1")
	check("a long-poll", renewal(), http.StatusOK, "1")
	// Two requests in one write: the first is answered here, the second
	// by net/http on the same connection.
	forged = bytes.Replace(renewal()[0], []byte("after=0"), []byte("after=1"), 1)
	check("a forged long-poll followed by a read of the head", [][]byte{append(forged,
		signedRaw(t, e, "GET", "/v1/users/alice/head", "")...)}, http.StatusUnauthorized, "")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the read of the head sent with the forged long-poll: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cspool-Head") != "1" {
		t.Errorf("the read of the head sent with the forged long-poll: %d, head %q; want 200, 1", resp.StatusCode, resp.Header.Get("Cspool-Head"))
	}
}
