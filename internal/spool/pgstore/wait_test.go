package pgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool/pgstore/pgtest"
)

// TestWaitersShareOneRecheck: many idle Waits cost the database one query
// per recheck interval between them, not one each (each Head or recheck
// query takes a connection from the pool, which the pool counts).
func TestWaitersShareOneRecheck(t *testing.T) {
	o := newOpener(t)
	s := o.openDSN(t, pgtest.Schema(t, o.db), Options{RecheckInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	const waiting = 200
	// Opening the store took connections too (the schema's migration):
	// count from here.
	opened := s.pool.Stat().AcquireCount()
	var wg sync.WaitGroup
	for i := 0; i < waiting; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Wait(ctx, fmt.Sprintf("w%d", i), 0)
		}()
	}
	defer wg.Wait()
	defer cancel()
	// Every Wait read its head once.
	for i := 0; i < 500 && s.pool.Stat().AcquireCount()-opened < waiting; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	// The first moments after the 200 reads take a few connections more
	// than their rechecks (up to 7 in the first 100 ms, seen on a loaded
	// machine): count the steady state, after the first rechecks.
	for r0, i := s.rechecks.Load(), 0; i < 500 && s.rechecks.Load() < r0+3; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	before, rBefore := s.pool.Stat().AcquireCount(), s.rechecks.Load()
	time.Sleep(time.Second)
	// One query per recheck (how many rechecks ran depends on the
	// machine's speed, so the test counts them rather than the clock); a
	// timer per Wait would make 200 per interval.
	n, r := s.pool.Stat().AcquireCount()-before, s.rechecks.Load()-rBefore
	if r == 0 {
		t.Fatal("no recheck ran in 1 s with a 50 ms interval")
	}
	if most := r + 5; n > most {
		t.Errorf("%d idle Waits took %d connections over %d rechecks; want at most %d (one query per recheck)", waiting, n, r, most)
	}
}

// TestRecheckWakesWithoutNotice: an append whose notice names someone else
// (as if the notice were lost) still wakes the waiter, through the
// Store's recheck.
func TestRecheckWakesWithoutNotice(t *testing.T) {
	o := newOpener(t)
	s := o.openDSN(t, pgtest.Schema(t, o.db), Options{RecheckInterval: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Append(ctx, "quiet", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait(ctx, "quiet", 1) }()
	time.Sleep(200 * time.Millisecond)
	leaf := sha256.Sum256([]byte("two"))
	if _, err := s.pool.Exec(ctx, "SELECT cspool_append($1, $2::bytea[], $3::bytea[], $4)",
		[]byte("quiet"), [][]byte{[]byte("two")}, [][]byte{leaf[:]}, hex.EncodeToString([]byte("someone-else"))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter was not woken by the recheck within 20 s")
	}
}

// lineWriter hands each line a slog handler writes to lines; a line that
// finds lines full is dropped.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// TestListenerLostNamesCause: when the session of a Store's listener is
// ended (pg_terminate_backend, as when an operator or a restart ends it),
// the line the Store logs names PostgreSQL's error, not the keepalive's
// "conn closed" on the dead connection, and the listener comes back.
func TestListenerLostNamesCause(t *testing.T) {
	o := newOpener(t)
	app := pgtest.Name("listener_")
	lines := make(lineWriter, 64)
	o.openDSN(t, pgtest.WithParam(pgtest.Schema(t, o.db), "application_name", app),
		Options{Logger: slog.New(slog.NewTextHandler(lines, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	test, err := pgx.Connect(ctx, o.db)
	if err != nil {
		t.Fatal(err)
	}
	defer test.Close(context.Background())
	// The listener's session: its last statement is the LISTEN, or its
	// keepalive after 5 s without notices.
	var pids []int32
	rows, err := test.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1
		AND (query LIKE 'LISTEN %' OR query = 'SELECT pg_backend_pid()')`, app)
	if err == nil {
		pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
	}
	if err != nil || len(pids) != 1 {
		t.Fatalf("finding the listener's session: %v, %v; want one", pids, err)
	}
	var ended bool
	if err := test.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pids[0]).Scan(&ended); err != nil || !ended {
		t.Fatalf("ending the listener's session: %v, %v", ended, err)
	}
	wait := func(msg string) string {
		t.Helper()
		for {
			select {
			case l := <-lines:
				if strings.Contains(l, msg) {
					return l
				}
			case <-ctx.Done():
				t.Fatalf("no log line %q", msg)
			}
		}
	}
	lost := wait("postgres listener lost its connection")
	if !strings.Contains(lost, "terminating connection due to administrator command") || !strings.Contains(lost, "57P01") {
		t.Errorf("the lost connection's log line: %s\nwant PostgreSQL's error (terminating connection due to administrator command, SQLSTATE 57P01)", lost)
	}
	wait("postgres listener reconnected")
}
