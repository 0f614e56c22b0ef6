package syncer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"path/filepath"
	"runtime"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// TestLargeOpenedSealedLetGo: OnLargeOpened runs once, for the batch that
// holds a message of 16 MiB and not for the batches of small ones, and
// when it runs the entry's sealed bytes are garbage already: a collection
// there leaves less than the message and a half live (the sealed bytes
// kept would make it twice the message). The message applies whole.
func TestLargeOpenedSealedLetGo(t *testing.T) {
	const size = 16 << 20
	r := newRig(t)
	ms, err := mailstore.Open(filepath.Join(r.dir, "a.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	r.deliver(r.spool, msg(0))
	large := &command.Command{Kind: command.Deliver, Date: 1764000000000,
		Body: append([]byte("Subject: large\r\n\r\n"), bytes.Repeat([]byte("0123456789abcde\n"), size/16)...)}
	r.deliver(r.spool, large)
	r.deliver(r.spool, msg(2))
	// The test keeps the message's hash, not its bytes.
	want, wantLen := sha256.Sum256(large.Body), len(large.Body)
	large = nil
	var calls int
	var live uint64
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"}, Store: ms,
		OnLargeOpened: func() {
			calls++
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			live = m.HeapAlloc
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("OnLargeOpened ran %d times, want once", calls)
	}
	if limit := uint64(wantLen) * 3 / 2; live > limit {
		t.Errorf("OnLargeOpened saw %d bytes live after a collection, want at most %d (the message of %d bytes and a half): the sealed bytes are still held",
			live, limit, wantLen)
	}
	_, msgs := inbox(t, ms)
	if len(msgs) != 3 || sha256.Sum256(msgs[1].Raw) != want {
		t.Fatalf("INBOX holds %d messages, the second of %d bytes; want 3, the second the %d delivered", len(msgs), len(msgs[1].Raw), wantLen)
	}
}
