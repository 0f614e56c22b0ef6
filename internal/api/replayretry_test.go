package api

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// doubler sends the first request of method it carries twice, the same
// bytes each time, and answers with the second answer: what net/http does
// with a GET whose connection broke after it was sent, or a proxy's retry.
type doubler struct {
	base    http.RoundTripper
	method  string
	doubled atomic.Bool
	sent    atomic.Int64 // requests of method sent to the server
}

func (d *doubler) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != d.method {
		return d.base.RoundTrip(req)
	}
	d.sent.Add(1)
	if !d.doubled.Swap(true) {
		first, err := d.base.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, first.Body)
		first.Body.Close()
		if req.GetBody != nil {
			req.Body, _ = req.GetBody()
		}
		d.sent.Add(1)
	}
	return d.base.RoundTrip(req)
}

// TestReadRefusedAsReplayedSignedAgain: a read the server refuses because
// a copy of it came first (401 with Cspool-Replayed) is signed again with a
// new nonce and succeeds; a device took the refusal for an unknown key and
// stopped syncing for ten minutes. A conditional append refused so is not
// sent again: only the caller knows whether the first copy landed.
func TestReadRefusedAsReplayedSignedAgain(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	if _, err := e.client(t, "alice", e.alice).Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}

	d := &doubler{base: e.srv.Client().Transport, method: http.MethodGet}
	c, err := NewClient(e.srv.URL, "alice", e.alice, &http.Client{Transport: d})
	if err != nil {
		t.Fatal(err)
	}
	lr, err := c.ReadLog(ctx, 0, 10, 1<<20, 0)
	if err != nil {
		t.Fatalf("a read whose first copy reached the server first: %v, want it signed again and answered", err)
	}
	if len(lr.Entries) != 1 || string(lr.Entries[0].Data) != "one" {
		t.Fatalf("read %d entries, want the one", len(lr.Entries))
	}
	if n := d.sent.Load(); n != 3 {
		t.Errorf("%d reads sent, want 3 (the two copies, then the one signed again)", n)
	}

	p := &doubler{base: e.srv.Client().Transport, method: http.MethodPost}
	c, err = NewClient(e.srv.URL, "alice", e.alice, &http.Client{Transport: p})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AppendAt(ctx, "alice", 1, [][]byte{[]byte("two")})
	if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, ErrReplayed) {
		t.Fatalf("a conditional append whose copy came first: %v, want the 401 to the caller, as ErrReplayed", err)
	}
	if n := p.sent.Load(); n != 2 {
		t.Errorf("%d appends sent, want 2 (the copies; none signed again)", n)
	}
	head, err := e.client(t, "alice", e.alice).Head(ctx)
	if err != nil || head != 2 {
		t.Errorf("head %d (%v), want 2: the first copy appended once", head, err)
	}
}

// TestReplayedHint: a path that sends every read twice (each copy after
// the server answered the one before) has the read, signed again, refused
// as a replay once more. The client gives up then, and the hint a device
// logs and shows must name the path: it said that the server refused the
// key and to check the users file, which holds nothing wrong.
func TestReplayedHint(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c, err := NewClient(e.srv.URL, "alice", e.alice, &http.Client{Transport: &twice{base: e.srv.Client().Transport}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadLog(ctx, 0, 10, 1<<20, 0)
	if !errors.Is(err, ErrReplayed) {
		t.Fatalf("every read sent twice: %v, want ErrReplayed", err)
	}
	if h := Hint(err); !strings.Contains(h, "twice") || strings.Contains(h, "users file") {
		t.Fatalf("hint %q: want it to name a path that sends requests twice, not the users file", h)
	}
}

// twice sends every request two times, the same bytes, and answers with
// the second answer.
type twice struct{ base http.RoundTripper }

func (d *twice) RoundTrip(req *http.Request) (*http.Response, error) {
	first, err := d.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, first.Body)
	first.Body.Close()
	if req.GetBody != nil {
		req.Body, _ = req.GetBody()
	}
	return d.base.RoundTrip(req)
}
