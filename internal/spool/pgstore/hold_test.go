package pgstore

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool"
)

// TestHoldLost: the session holding a store's spool key ends under it
// (pg_terminate_backend, as when the connection drops). The store then
// refuses its appends as unavailable (a *spool.HoldLostError) rather than
// append with no hold, since another server could now record another key,
// and takes the hold again on a new connection; its appends then go on. A
// test connection holds SpoolKeyLockKey while the hold is lost, so that
// taking it again waits and the refusal can be seen.
func TestHoldLost(t *testing.T) {
	o := newOpener(t)
	st := o.fresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := bytes.Repeat([]byte{0xa}, 64)
	if err := st.HoldSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "alice", [][]byte{[]byte("a1")}); err != nil {
		t.Fatal(err)
	}
	holder := func() (pid int32) {
		t.Helper()
		err := st.Pool().QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock'
			AND classid::bigint = $1 AND objid = 'cspool_spool_key'::regclass::oid AND objsubid = 2`, int64(HoldLockClass)).Scan(&pid)
		if err != nil {
			t.Fatalf("finding the session holding the spool key: %v", err)
		}
		return pid
	}
	pid := holder()
	test, err := pgx.Connect(ctx, o.dsns[st])
	if err != nil {
		t.Fatal(err)
	}
	defer test.Close(context.Background())
	if _, err := test.Exec(ctx, "SELECT pg_advisory_lock($1)", SpoolKeyLockKey); err != nil {
		t.Fatal(err)
	}
	var ended bool
	if err := test.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ended); err != nil || !ended {
		t.Fatalf("ending the session holding the key: %v, %v", ended, err)
	}
	// Wait, by condition, until the store has seen the session end (an
	// append sent before would wait for the test's lock).
	for st.holdLost.Load() == nil {
		if ctx.Err() != nil {
			t.Fatal("the store never noticed that its hold ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = st.Append(ctx, "alice", [][]byte{[]byte("lost")})
	var lost *spool.HoldLostError
	if !errors.As(err, &lost) || !errors.Is(err, spool.ErrHoldLost) || !errors.Is(err, spool.ErrUnavailable) {
		t.Fatalf("append after the hold was lost: %v, want a *HoldLostError, unavailable", err)
	}
	if _, err := test.Exec(ctx, "SELECT pg_advisory_unlock($1)", SpoolKeyLockKey); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := st.Append(ctx, "alice", [][]byte{[]byte("again")})
		if err == nil {
			break
		}
		if !errors.Is(err, spool.ErrHoldLost) || ctx.Err() != nil {
			t.Fatalf("append while the hold is taken again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if again := holder(); again == pid {
		t.Errorf("the hold is still on the ended session %d", pid)
	}
	if h, err := st.Head(ctx, "alice"); err != nil || h != 2 {
		t.Errorf("head %d, %v; want 2: the refused append is not in the log", h, err)
	}
}

// TestCloseReleasesHold: once Close returns, no session holds the store's
// spool key any more, so a server started next with another key is not
// refused. The hold's connection was closed by pgx in the background after
// its wait was cancelled, and PostgreSQL released the lock only when its
// process for that session had ended: a start right after Close could find
// the old hold (TestConformance/HoldSpoolKey failed that way in CI, under
// load).
func TestCloseReleasesHold(t *testing.T) {
	o := newOpener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first := o.fresh(t)
	dsn := o.dsns[first]
	test, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer test.Close(context.Background())
	a := bytes.Repeat([]byte{0xa}, 64)
	st := first
	for i := range 20 {
		if i > 0 {
			st = o.openDSN(t, dsn, Options{})
		}
		if err := st.HoldSpoolKey(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		var held int
		if err := test.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND classid::bigint = $1 AND objid = 'cspool_spool_key'::regclass::oid AND objsubid = 2`, int64(HoldLockClass)).Scan(&held); err != nil {
			t.Fatal(err)
		}
		if held != 0 {
			t.Fatalf("round %d: %d sessions hold the spool key after Close returned, want none", i, held)
		}
	}
}
