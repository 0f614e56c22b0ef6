package syncer

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// TestStoreOutOfMemoryRetried: SQLite runs out of memory applying a
// batch (the store's writer connection opened with 4 MB of memory, the
// third of five deliveries 4 MiB). The syncer logs the store's failure,
// goes on, and on its retry, on a new writer connection (the one that
// failed is closed), applies the batch in full, each entry once. Before,
// the Apply hung in its deferred Rollback and the syncer with it,
// silently: nothing logged, nothing applied after it.
func TestStoreOutOfMemoryRetried(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	for i := range 5 {
		c := msg(i)
		if i == 2 {
			c = &command.Command{Kind: command.Deliver, Date: 1764000000000 + int64(i),
				Body: append(c.Body, bytes.Repeat([]byte("a line of a large message\r\n"), 4<<20/27)...)}
		}
		r.deliver(r.spool, c)
	}
	ms, err := mailstore.OpenContext(sqlite3.WithMaxMemory(ctx, 4<<20), filepath.Join(r.dir, "a.db"), mailstore.Options{Parser: mimeform.Parser{}})
	if err != nil {
		t.Fatal(err)
	}
	log := &syncLog{}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: ms, Logger: slog.New(slog.NewTextHandler(log, nil)), Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	for deadline := time.Now().Add(testproc.HangLimit); ; time.Sleep(20 * time.Millisecond) {
		if pos, err := ms.Position(ctx); err != nil {
			t.Fatal(err)
		} else if pos == 5 {
			break
		}
		if time.Now().After(deadline) {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 2)
			t.Fatalf("the device did not reach position 5 within %s (hung); its log:\n%s\ngoroutines:\n%s", testproc.HangLimit, log, b.String())
		}
	}
	stop()
	t.Cleanup(func() { ms.Close() })
	failed := ""
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "applying to the local store failed; retrying") {
			failed = line
			break
		}
	}
	if !strings.Contains(failed, "sqlite3: out of memory") {
		t.Errorf("no line that says applying failed for want of memory and is retried; the log:\n%s", log)
	}
	t.Logf("the syncer logged: %s", failed)
	if st := s.Status(); st.LastError != "" {
		t.Errorf("status after the batch applied: last error %q, want none", st.LastError)
	}
	_, msgs := inbox(t, ms)
	if len(msgs) != 5 {
		t.Fatalf("INBOX holds %d messages, want the 5 delivered", len(msgs))
	}
	for i, m := range msgs {
		if want := []byte("Subject: message " + string(rune('0'+i)) + "\r\n"); !bytes.HasPrefix(m.Raw, want) {
			t.Errorf("message %d starts %.30q, want %q", i+1, m.Raw, want)
		}
	}
	if n, err := ms.RejectedCount(ctx); err != nil || n != 0 {
		t.Errorf("%d rejected entries (%v), want none", n, err)
	}
}
