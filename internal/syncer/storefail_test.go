package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// fullStore is a Store whose applies fail while full is set, as on a
// full disk.
type fullStore struct {
	Store
	full atomic.Bool
}

var errDiskFull = errors.New("the disk holding the database is full")

func (f *fullStore) ApplyChained(ctx context.Context, entries []mailstore.Entry, unopened []mailstore.Rejection, newPos uint64, c []chain.Hash) (*mailstore.Result, error) {
	if f.full.Load() {
		return nil, errDiskFull
	}
	return f.Store.ApplyChained(ctx, entries, unopened, newPos, c)
}

// onStore makes alice's device on a new database in r's directory, seen
// through wrap, logging into log, with long-polls of wait.
func onStore(t *testing.T, r *rig, wrap func(Store) Store, log *syncLog, wait time.Duration) *Syncer {
	t.Helper()
	ms, err := mailstore.Open(filepath.Join(r.dir, "a.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: wrap(ms), Logger: slog.New(slog.NewTextHandler(log, nil)), Wait: wait, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStoreFailingIsNotTheSpool: while the device's own database cannot be
// written (a full disk), the spool answers. The status said it did not
// ("NOT CONNECTED: no answer from the spool", down since the disk filled),
// and the log said "spool reachable again" after every read, several times
// a second; a user went looking for a network fault. Now the status says
// the spool answers and the store fails, and the log says only that.
func TestStoreFailingIsNotTheSpool(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var fs *fullStore
	log := &syncLog{}
	s := onStore(t, r, func(ms Store) Store { fs = &fullStore{Store: ms}; fs.full.Store(true); return fs }, log, 2*time.Second)
	r.deliver(r.spool, msg(0))
	stop := run(t, s)
	defer stop()
	deadline := time.Now().Add(testproc.HangLimit)
	for !strings.Contains(s.Status().LastError, errDiskFull.Error()) {
		if time.Now().After(deadline) {
			t.Fatalf("no store failure in the status: %+v", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several retries
	st := s.Status()
	if !st.Connected || !st.DownSince.IsZero() || !st.StoreFailing {
		t.Errorf("status while the store fails: connected %v, down since %v, store failing %v; want the spool connected and the store failing",
			st.Connected, st.DownSince, st.StoreFailing)
	}
	if strings.Contains(log.String(), "spool reachable again") {
		t.Errorf("the log says the spool was away:\n%s", log)
	}
	fs.full.Store(false)
	for {
		if pos, err := fs.Store.Position(ctx); err != nil {
			t.Fatal(err)
		} else if pos == 1 && s.Status().LastError == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not applied once the store took writes again: %+v", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Status(); st.StoreFailing || !st.Connected {
		t.Errorf("status once applied: %+v", st)
	}
}

// committedStore is a Store whose next apply commits and then reports a
// failure, as SQLite can on a full disk: an I/O error once the
// write-ahead log already held the transaction.
type committedStore struct {
	Store
	fail atomic.Bool
}

func (f *committedStore) ApplyChained(ctx context.Context, entries []mailstore.Entry, unopened []mailstore.Rejection, newPos uint64, c []chain.Hash) (*mailstore.Result, error) {
	res, err := f.Store.ApplyChained(ctx, entries, unopened, newPos, c)
	if err == nil && f.fail.CompareAndSwap(true, false) {
		return nil, fmt.Errorf("%w: committing apply up to position %d: disk I/O error", errDiskFull, newPos)
	}
	return res, err
}

// TestCommitFailedButApplied: an apply whose commit reported an error but
// reached the database. The loop retried from its own position, met the
// entries the commit had applied and raised an integrity alarm ("entry N
// replays entry N"), which stopped the device until a person cleared it.
// Now it reads on from the store's position, and the entries after it
// apply.
func TestCommitFailedButApplied(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var cs *committedStore
	s := onStore(t, r, func(ms Store) Store { cs = &committedStore{Store: ms}; cs.fail.Store(true); return cs }, &syncLog{}, 200*time.Millisecond)
	r.deliver(r.spool, msg(0))
	stop := run(t, s)
	defer stop()
	deadline := time.Now().Add(testproc.HangLimit)
	for cs.fail.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the failing apply never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.deliver(r.spool, msg(1))
	for {
		st := s.Status()
		if st.Alarm != "" {
			t.Fatalf("integrity alarm after a commit that reported a failure: %s", st.Alarm)
		}
		if pos, err := cs.Store.Position(ctx); err != nil {
			t.Fatal(err)
		} else if pos == 2 && st.Position == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not applied after the commit that reported a failure: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A change of this device whose apply so fails is answered from the
	// store: the client hears OK, not a failure for a change in the log.
	cs.fail.Store(true)
	sctx, cancel := context.WithTimeout(ctx, testproc.HangLimit)
	defer cancel()
	outs, err := s.Submit(sctx, &command.Command{Kind: command.Append, Mailbox: "INBOX", Date: 1, Body: []byte("Subject: a\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatalf("submit whose apply reported a failure after its commit: %v (status %+v)", err, s.Status())
	}
	if len(outs) != 1 || outs[0].Status == mailstore.Rejected {
		t.Errorf("outcome %+v, want the append applied", outs)
	}
	if st := s.Status(); st.Alarm != "" || st.Position != 3 {
		t.Errorf("after the submit: alarm %q, position %d; want none and 3", st.Alarm, st.Position)
	}
}
