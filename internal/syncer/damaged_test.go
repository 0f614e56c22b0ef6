package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/chain"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// damagedStore is a device store whose applies fail as SQLite's do on a
// damaged file.
type damagedStore struct{ Store }

func (damagedStore) ApplyChained(context.Context, []mailstore.Entry, []mailstore.Rejection, uint64, []chain.Hash) (*mailstore.Result, error) {
	return nil, fmt.Errorf("applying the batch: %w", sqlite3.CORRUPT)
}

// TestStoreProblemOnce: a failure of the local store that retrying cannot
// heal (StoreProblem names it: a damaged database) is logged once with
// what to do, shown in the status with it, and tried again only after
// RecheckPermanent. Before, it was retried with backoff and logged at
// every try ("applying to the local store failed; retrying"), with no
// hint anywhere.
func TestStoreProblemOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	for i := range 3 {
		r.deliver(r.spool, msg(i))
	}
	ms, err := mailstore.Open(filepath.Join(r.dir, "a.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	const hint = "move the database aside and start again"
	log := &syncLog{}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: damagedStore{ms}, Logger: slog.New(slog.NewTextHandler(log, nil)), Wait: time.Second,
		MaxBackoff: 10 * time.Millisecond, RecheckPermanent: time.Hour,
		StoreProblem: func(err error) string {
			if errors.Is(err, sqlite3.CORRUPT) {
				return hint
			}
			return ""
		}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	for deadline := time.Now().Add(testproc.HangLimit); s.Status().Hint != hint; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no hint in the status: %+v; log:\n%s", s.Status(), log)
		}
	}
	// Time for several retries at the backoff, had there been any.
	time.Sleep(200 * time.Millisecond)
	out := log.String()
	if n := strings.Count(out, "cannot apply the log to the local store until this is fixed"); n != 1 {
		t.Errorf("%d lines that say it, want 1; log:\n%s", n, out)
	}
	if strings.Contains(out, "retrying") {
		t.Errorf("retried at the backoff; log:\n%s", out)
	}
	if st := s.Status(); !strings.Contains(st.LastError, "to fix: "+hint) {
		t.Errorf("last error %q, want it with the hint", st.LastError)
	}
}
