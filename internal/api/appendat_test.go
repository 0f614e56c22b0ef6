package api

import (
	"errors"
	"net/http"
	"net/url"
	"testing"

	"cspool/internal/spool"
)

// TestAppendAt: an append with if_head goes through on the head the log
// has, is refused with 409 and the head found (nothing appended) on any
// other, and a malformed if_head is a bad request.
func TestAppendAt(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	if first, err := c.AppendAt(ctx, "alice", 0, [][]byte{[]byte("a"), []byte("b")}); err != nil || first != 1 {
		t.Fatalf("AppendAt(0) on an empty log: first %d, %v; want 1", first, err)
	}
	_, err := c.AppendAt(ctx, "alice", 0, [][]byte{[]byte("again")})
	var moved *spool.HeadMovedError
	if !errors.Is(err, spool.ErrHeadMoved) || !errors.As(err, &moved) || moved.Want != 0 || moved.Head != 2 {
		t.Fatalf("AppendAt(0) on head 2: %v (%+v), want a HeadMovedError for 0 finding 2", err, moved)
	}
	if errors.Is(err, spool.ErrStaleCheckpoint) || IsTemporary(err) || Hint(err) != "" {
		t.Errorf("a moved head reads as a stale checkpoint, a temporary or a permanent error: %v", err)
	}
	if first, err := c.AppendAt(ctx, "alice", 2, [][]byte{[]byte("c")}); err != nil || first != 3 {
		t.Fatalf("AppendAt(2): first %d, %v; want 3", first, err)
	}
	if h, err := c.Head(ctx); err != nil || h != 3 {
		t.Fatalf("head %d, %v; want 3", h, err)
	}
	for _, bad := range []string{"x", "-1", "01", ""} {
		q := url.Values{"if_head": {bad}}
		_, err := c.send(ctx, "bad if_head", http.MethodPost, "/v1/users/alice/entries", q, EncodeBatch([][]byte{[]byte("no")}), ContentType)
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("if_head=%q: %v, want 400", bad, err)
		}
	}
	if h, err := c.Head(ctx); err != nil || h != 3 {
		t.Fatalf("head %d after refused appends, %v; want 3", h, err)
	}
}
