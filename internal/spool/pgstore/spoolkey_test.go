package pgstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"cspool/internal/spool"
)

// TestKeyReplacedWaitsForAppend: an append bound to key a is in flight (its
// transaction has run cspool_append_within and not committed, as a group
// does between its statements and COMMIT) while another server records
// key b on the new store. Recording b waits for the append's commit
// (SpoolKeyLockKey), then finds the log and is refused: without the lock it
// would see no log, record b, and the append of a would land under b. A
// server of schema version 6 or earlier (the six-argument call) checks
// nothing, as before.
func TestKeyReplacedWaitsForAppend(t *testing.T) {
	o := newOpener(t)
	st := o.fresh(t)
	second := o.reopen(t, st).(*Store)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64)
	if err := st.KeepSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	tx, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	leaf := sha256.Sum256([]byte("a1"))
	var first int64
	if err := tx.QueryRow(ctx, appendSQL, []byte("alice"), nil, nil, [][]byte{[]byte("a1")}, [][]byte{leaf[:]}, "", a, nil, nil, nil).Scan(&first); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- second.KeepSpoolKey(ctx, b) }()
	// Wait, by condition, until the recording waits for the lock.
	for {
		var waiting bool
		err := st.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted AND mode = 'ExclusiveLock'
			AND ((classid::bigint << 32) | objid::bigint) = $1)`, SpoolKeyLockKey).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("recording b returned while an append of a was uncommitted: %v", err)
		case <-ctx.Done():
			t.Fatal("recording b never waited for the lock")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var other *spool.OtherKeyError
	if err := <-done; !errors.As(err, &other) || !bytes.Equal(other.Recorded, a) {
		t.Fatalf("recording b after an append of a committed: %v, want an *OtherKeyError naming a", err)
	}
	if _, err := st.Append(ctx, "alice", [][]byte{[]byte("a2")}); err != nil {
		t.Fatalf("appending with the recorded key: %v", err)
	}
	// The six-argument function of schema version 6, for servers of that
	// version still running, appends without a check.
	var pos int64
	leaf = sha256.Sum256([]byte("old"))
	if err := st.Pool().QueryRow(ctx, `SELECT cspool_append_within($1, NULL, NULL, $2::bytea[], $3::bytea[], '')`,
		[]byte("alice"), [][]byte{[]byte("old")}, [][]byte{leaf[:]}).Scan(&pos); err != nil || pos != 3 {
		t.Fatalf("six-argument append: position %d, %v; want 3", pos, err)
	}
}
