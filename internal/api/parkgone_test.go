package api

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// rawPoll is a long-poll of alice's sent on a connection of its own.
type rawPoll struct {
	conn   net.Conn
	answer chan *http.Response // its answer, nil if none came
}

// parkRaw sends alice's long-poll on a new connection and waits until it
// is parked; a poll answered instead fails the test.
func parkRaw(t *testing.T, e *env) *rawPoll {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rp := &rawPoll{conn: conn, answer: make(chan *http.Response, 1)}
	if _, err := conn.Write(signedRaw(t, e, "GET", "/v1/users/alice/entries", "after=0&wait=300")); err != nil {
		t.Fatal(err)
	}
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		rp.answer <- resp
	}()
	waitFor(t, "the long-poll parked", func() bool {
		select {
		case resp := <-rp.answer:
			if resp == nil {
				t.Fatal("a long-poll's connection closed without an answer; want it parked")
			}
			t.Fatalf("a long-poll answered %d %q; want it parked", resp.StatusCode, resp.Header.Get("Cspool-Error"))
		default:
		}
		return parkedFrom(e, conn.LocalAddr().String())
	})
	return rp
}

// parkedFrom reports whether a read of alice's from remote is parked.
func parkedFrom(e *env, remote string) bool {
	for _, pk := range e.api.polls.parkedOf("alice") {
		if pk.remote == remote {
			return true
		}
	}
	return false
}

// TestClosedParkedReadsFreeTheirPlaces: a device killed and restarted
// again and again (a crash loop) leaves behind a parked read per run whose
// connection its client closed. Past the user's share of long-polls (16),
// each next run's read parks, the closed ones ended to make room, and a
// device's read waits and brings the next entry; so too when the client's
// system reset the connection instead of ending it. Before, the closed reads
// held their places until their waits ended (5 minutes): the 17th run's
// read got 429, and so did every read of the user that would wait.
func TestClosedParkedReadsFreeTheirPlaces(t *testing.T) {
	e := newEnv(t, false, nil) // MaxLongPolls 16, MaxWait 5 minutes
	closed := map[string]bool{}
	for i := range 24 {
		rp := parkRaw(t, e)
		closed[rp.conn.LocalAddr().String()] = true
		if i%2 == 1 {
			// Closed with a reset rather than the end of the stream.
			if err := rp.conn.(*net.TCPConn).SetLinger(0); err != nil {
				t.Fatal(err)
			}
		}
		rp.conn.Close() // the daemon killed
	}
	deviceReadWaitsThenBrings(t, e, e.client(t, "alice", e.alice), closed)
}

// TestLiveParkedReadsKept: parked reads whose clients keep their
// connections open (idle, as a device waiting for its answer) are never
// ended to make room: with the share full of them, a further read gets
// 429, and each of them is answered with the next entry.
func TestLiveParkedReadsKept(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	var polls []*rawPoll
	for range 16 {
		polls = append(polls, parkRaw(t, e))
	}
	_, _, err := e.client(t, "alice", e.alice).Read(ctx, 0, 0, 0, longWait)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests {
		t.Fatalf("a 17th read with 16 live ones parked: %v; want 429", err)
	}
	if n, m := e.api.parkedCount(), len(e.api.polls.parkedOf("alice")); n != 16 || m != 16 {
		t.Fatalf("%d reads parked (%d in alice's share) after the refusal, want the 16 live ones", n, m)
	}
	if _, err := e.store.Append(ctx, "alice", [][]byte{e.delivery(t, "alice", "Subject: new\r\n\r\nnew\r\n")}); err != nil {
		t.Fatal(err)
	}
	for i, rp := range polls {
		select {
		case resp := <-rp.answer:
			if resp == nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Cspool-Head") != "1" {
				t.Errorf("live parked read %d answered %+v; want 200 with head 1", i, resp)
			}
		case <-time.After(earlyBound(t)):
			t.Fatalf("live parked read %d not answered after the append", i)
		}
	}
}

// TestClosedParkedReadsFreeTheirPlacesOverTLS: the same over the server's
// own TLS (ListenerTLS), where a parked read's connection is a TLS one:
// the look goes to the TCP connection under it. Each run's daemon is
// killed, so its connection ends without TLS's close_notify.
func TestClosedParkedReadsFreeTheirPlacesOverTLS(t *testing.T) {
	e := newEnv(t, false, nil)
	certs := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate
	t.Cleanup(certs.Close)
	srv := httptest.NewUnstartedServer(e.api)
	srv.Listener = e.api.ListenerTLS(srv.Listener, certs.TLS)
	srv.Start()
	t.Cleanup(srv.Close)
	clientTLS := certs.Client().Transport.(*http.Transport).TLSClientConfig
	addr := srv.Listener.Addr().String()
	closed := map[string]bool{}
	for i := range 24 {
		conn, err := tls.Dial("tcp", addr, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(signedRaw(t, e, "GET", "/v1/users/alice/entries", "after=0&wait=300")); err != nil {
			t.Fatal(err)
		}
		answered := make(chan *http.Response, 1)
		go func() {
			resp, _ := http.ReadResponse(bufio.NewReader(conn), nil)
			answered <- resp
		}()
		waitFor(t, "the long-poll over TLS parked", func() bool {
			select {
			case resp := <-answered:
				if resp == nil {
					t.Fatalf("long-poll %d over TLS: the connection closed without an answer; want it parked", i+1)
				}
				t.Fatalf("long-poll %d over TLS answered %d %q; want it parked", i+1, resp.StatusCode, resp.Header.Get("Cspool-Error"))
			default:
			}
			return parkedFrom(e, conn.LocalAddr().String())
		})
		closed[conn.LocalAddr().String()] = true
		conn.NetConn().Close() // the daemon killed: no close_notify
	}
	c, err := NewClient("https://"+addr, "alice", e.alice, &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}})
	if err != nil {
		t.Fatal(err)
	}
	deviceReadWaitsThenBrings(t, e, c, closed)
}

// deviceReadWaitsThenBrings has c, alice's device, read with a long-poll
// once alice's share is full of parked reads whose clients went away (the
// remotes in gone): the read must park, not be refused, and bring the
// entry appended next.
func deviceReadWaitsThenBrings(t *testing.T, e *env, c *Client, gone map[string]bool) {
	t.Helper()
	ctx := testCtx(t)
	ch := startPoll(ctx, c, 0, longWait)
	waitFor(t, "the device's read parked", func() bool {
		select {
		case r := <-ch:
			t.Fatalf("a device's read after %d parked reads whose clients went away = %d entries, %v; want it to wait", len(gone), len(r.entries), r.err)
		default:
		}
		for _, pk := range e.api.polls.parkedOf("alice") {
			if !gone[pk.remote] {
				return true
			}
		}
		return false
	})
	if _, err := e.store.Append(ctx, "alice", [][]byte{e.delivery(t, "alice", "Subject: new\r\n\r\nnew\r\n")}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.err != nil || len(r.entries) != 1 {
			t.Fatalf("the device's waiting read = %d entries, %v; want the new entry", len(r.entries), r.err)
		}
	case <-time.After(earlyBound(t)):
		t.Fatal("the device's waiting read did not bring the new entry")
	}
}
