package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"cspool/internal/spool/pgstore/pgtest"
)

// TestGroupOneCallFails: a call that fails inside a group is rolled back
// alone; the others of the group commit with dense positions.
func TestGroupOneCallFails(t *testing.T) {
	o := newOpener(t)
	dsn := pgtest.Schema(t, o.db)
	s := o.openDSN(t, dsn, Options{})
	ctx := context.Background()
	_, err := s.Pool().Exec(ctx, `
		CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.data = 'boom'::bytea THEN RAISE EXCEPTION 'boom'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER boom BEFORE INSERT ON cspool_entries FOR EACH ROW EXECUTE FUNCTION boom();`)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(fmt.Sprint(i))
			if i%10 == 3 {
				data = []byte("boom")
			}
			_, errs[i] = s.Append(ctx, fmt.Sprintf("u%d", i%4), [][]byte{data})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%10 == 3) != (err != nil) {
			t.Errorf("append %d: %v", i, err)
		}
	}
	var total int64
	for u := range 4 {
		h, err := s.Head(ctx, fmt.Sprintf("u%d", u))
		if err != nil {
			t.Fatal(err)
		}
		es, err := s.Read(ctx, fmt.Sprintf("u%d", u), 0, 1000, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(es)) != h {
			t.Errorf("u%d: head %d, %d entries", u, h, len(es))
		}
		for j, e := range es {
			if e.Pos != uint64(j+1) || string(e.Data) == "boom" {
				t.Errorf("u%d: entry %d at %d: %q", u, j, e.Pos, e.Data)
			}
		}
		total += int64(h)
	}
	if total != n-n/10 {
		t.Errorf("%d entries, want %d", total, n-n/10)
	}
	t.Logf("%d appends in %d commits", s.appends.Load(), s.commits.Load())
	if s.commits.Load() >= s.appends.Load() {
		t.Errorf("no group of more than one append (%d commits for %d appends)", s.commits.Load(), s.appends.Load())
	}
}

// TestGroupsNoDeadlock: two stores (as two processes) append concurrently
// to the same users in random order; groups take row locks in name order,
// so none deadlocks and every position is dense.
func TestGroupsNoDeadlock(t *testing.T) {
	o := newOpener(t)
	dsn := pgtest.Schema(t, o.db)
	a := o.openDSN(t, dsn, Options{})
	b := o.openDSN(t, dsn, Options{})
	ctx := context.Background()
	users := []string{"e", "d", "c", "b", "a"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	got := map[string]int{}
	for g := range 16 {
		st := a
		if g%2 == 1 {
			st = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for range 40 {
				u := users[rng.Intn(len(users))]
				_, err := st.Append(ctx, u, [][]byte{{1}, {2}})
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					got[u] += 2
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d appends failed, first: %v", len(failures), failures[0])
	}
	for _, u := range users {
		h, err := a.Head(ctx, u)
		if err != nil || h != uint64(got[u]) {
			t.Errorf("%s: head %d (%v), want %d", u, h, err, got[u])
		}
	}
}

// TestGroupCancelledCaller: a caller whose context ends while it waits gets
// ctx.Err(); the store keeps working.
func TestGroupCancelledCaller(t *testing.T) {
	o := newOpener(t)
	s := o.fresh(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, "x", [][]byte{{1}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Append: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	first, err := s.Append(ctx2, "x", [][]byte{{1}})
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Head(ctx2, "x"); h != first {
		t.Fatalf("head %d after append at %d", h, first)
	}
}
