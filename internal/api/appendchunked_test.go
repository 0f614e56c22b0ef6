package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestChunkedAppendHoldsWhatItRead: an append whose length is not given
// (Transfer-Encoding: chunked, as a proxy that re-chunks bodies sends
// every request) holds in the appends' budget what it has read, not the
// limit. Before, it took MaxBody up front: one stalled or slow chunked
// append of a few bytes held its key's whole share, so the same user's
// next append (another device's flag change) got 429, and four of them
// filled AppendMemory, so every other user's append waited, then got 503.
func TestChunkedAppendHoldsWhatItRead(t *testing.T) {
	t.Parallel()
	const maxBody = 2 << 20
	e := newEnv(t, false, func(c *Config) {
		c.MaxBody, c.AppendMemory, c.CheckpointWait = maxBody, maxBody+maxBody/2, 300*time.Millisecond
	})
	small := EncodeBatch([][]byte{[]byte("a flag change")})
	big := EncodeBatch([][]byte{bytes.Repeat([]byte{'x'}, maxBody/2)})
	// send signs an append of body by key, sent chunked, whose bytes after
	// the first part wait until rest is closed.
	type sent struct {
		resp chan *http.Response
		rest chan struct{}
	}
	send := func(user string, key *keys.SecretKey, body []byte, part int) *sent {
		pr, pw := io.Pipe()
		req, err := http.NewRequest("POST", e.srv.URL+"/v1/users/"+user+"/entries", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1 // chunked
		req.Header.Set("Content-Type", ContentType)
		if err := SignRequest(req, body, key, time.Now()); err != nil {
			t.Fatal(err)
		}
		s := &sent{resp: make(chan *http.Response, 1), rest: make(chan struct{})}
		go func() {
			pw.Write(body[:part])
			<-s.rest
			pw.Write(body[part:])
			pw.Close()
		}()
		go func() {
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				close(s.resp)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			s.resp <- resp
		}()
		return s
	}
	status := func(s *sent) int {
		select {
		case resp := <-s.resp:
			if resp == nil {
				return 0
			}
			return resp.StatusCode
		case <-time.After(timeLeft(t)):
			t.Fatal("no answer")
			return 0
		}
	}
	held := func() int64 { h, _, _ := e.api.apMem.state(); return h }
	// alice's first device sends a large change slowly: a part, then a pause.
	slow := send("alice", e.alice, big, 1000)
	for deadline := time.Now().Add(timeLeft(t)); held() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow append was never read")
		}
	}
	// Meanwhile her second device, and bob, each append a small change.
	a2 := send("alice", e.alice, small, 0)
	close(a2.rest)
	if got := status(a2); got != http.StatusOK {
		t.Errorf("alice's small chunked append beside her slow one: %d, want 200", got)
	}
	b := send("bob", e.bob, small, 0)
	close(b.rest)
	if got := status(b); got != http.StatusOK {
		t.Errorf("bob's small chunked append beside alice's slow one: %d, want 200", got)
	}
	close(slow.rest)
	if got := status(slow); got != http.StatusOK {
		t.Fatalf("the slow append: %d, want 200", got)
	}
	// A chunked body over the limit is still refused, and the budget
	// never held more than AppendMemory.
	over := send("bob", e.bob, EncodeBatch([][]byte{bytes.Repeat([]byte{'y'}, maxBody)}), 0)
	close(over.rest)
	if got := status(over); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a chunked append over MaxBody: %d, want 413", got)
	}
	if _, peak, _ := e.api.apMem.state(); peak > e.api.cfg.AppendMemory {
		t.Errorf("peak %d bytes held, over AppendMemory %d", peak, e.api.cfg.AppendMemory)
	}
	for user, want := range map[string]uint64{"alice": 2, "bob": 1} {
		if h, err := e.store.Head(context.Background(), user); err != nil || h != want {
			t.Errorf("head of %s %d (%v), want %d", user, h, err, want)
		}
	}
	for deadline := time.Now().Add(timeLeft(t)); held() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("at the end the budget holds %d bytes, want 0", held())
		}
	}
}
