package api

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
)

// TestChunkedCheckpointHoldsWhatItRead: a checkpoint upload whose length
// is not given (Transfer-Encoding: chunked, as a proxy that re-chunks
// bodies sends every request) holds in the checkpoints' budget what it
// has read, not the limit. Before, it took MaxCheckpointBody up front:
// two such uploads on their way, from two users, held the whole default
// CheckpointMemory, so every other user's download (a new device's first
// sync) and upload waited, then got 503, for as long as they lasted.
func TestChunkedCheckpointHoldsWhatItRead(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.CheckpointWait = 300 * time.Millisecond })
	ctx := testCtx(t)
	alice := e.client(t, "alice", e.alice)
	appendNumbered(t, alice, 8)
	bob := e.client(t, "bob", e.bob)
	if _, err := bob.Append(ctx, "bob", [][]byte{[]byte("1"), []byte("2"), []byte("3"), []byte("4"), []byte("5"), []byte("6")}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.PutCheckpoint(ctx, spool.Checkpoint{Pos: 4, Data: []byte("alice's first checkpoint")}, nil); err != nil {
		t.Fatal(err)
	}
	whole, err := EncodeCheckpoint(nil, []byte("a checkpoint sent slowly"))
	if err != nil {
		t.Fatal(err)
	}
	// Alice's and bob's devices each upload a checkpoint, chunked, whose
	// body stops after its kept count for now.
	var rest []*io.PipeWriter
	var answers []chan int
	for _, u := range []struct {
		name string
		key  *keys.SecretKey
	}{{"alice", e.alice}, {"bob", e.bob}} {
		pr, pw := io.Pipe()
		req, err := http.NewRequest("PUT", e.srv.URL+"/v1/users/"+u.name+"/checkpoint?pos=6&"+ReadsParam+"=4", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		req.Header.Set("Content-Type", CheckpointContentType)
		if err := SignRequest(req, whole, u.key, time.Now()); err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go req.Write(conn)
		pw.Write(whole[:1])
		rest = append(rest, pw)
		answer := make(chan int, 1)
		answers = append(answers, answer)
		go func() {
			conn.SetReadDeadline(time.Now().Add(timeLeft(t)))
			resp, err := http.ReadResponse(bufio.NewReader(conn), req)
			if err != nil {
				answer <- 0
				return
			}
			resp.Body.Close()
			answer <- resp.StatusCode
		}()
	}
	waitFor(t, "both uploads held", func() bool {
		e.api.cpKeysMu.Lock()
		uploads := len(e.api.cpKeys)
		e.api.cpKeysMu.Unlock()
		held, _, _ := e.api.cpMem.state()
		return uploads == 2 && held > 0
	})
	// Meanwhile a new device of alice's downloads her checkpoint.
	cp, err := alice.Checkpoint(ctx)
	if err != nil {
		t.Errorf("a download while two chunked uploads are on their way: %v", err)
	} else if cp.Pos != 4 {
		t.Errorf("downloaded the checkpoint at %d, want 4", cp.Pos)
	}
	for i, pw := range rest {
		pw.Write(whole[1:])
		pw.Close()
		if got := <-answers[i]; got != http.StatusOK {
			t.Errorf("upload %d once its body came: %d, want 200", i, got)
		}
	}
	if _, peak, _ := e.api.cpMem.state(); peak > e.api.cfg.CheckpointMemory {
		t.Errorf("peak %d bytes held, over CheckpointMemory %d", peak, e.api.cfg.CheckpointMemory)
	}
	if got, err := bob.Checkpoint(ctx); err != nil || !bytes.Equal(got.Data, []byte("a checkpoint sent slowly")) {
		t.Errorf("bob's checkpoint %q (%v)", got.Data, err)
	}
}
