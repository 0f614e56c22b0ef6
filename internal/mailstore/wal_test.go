package mailstore

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// TestWALBounded applies batches of deliveries while two readers keep a
// read transaction open almost all the time, as IMAP clients polling
// STATUS do during a first sync: without the checkpoint after commits
// (wal.go) the WAL never starts over and grows with every batch. With a
// limit of 512 KiB it must stay within three limits, in plaintext and
// encrypted. Each reader holds its transaction for a millisecond after
// its query and starts the next one at once: open almost all the time,
// as before, without two readers spinning on the race detector's
// SQLite and leaving the writer a third of the machine's two cores.
func TestWALBounded(t *testing.T) {
	t.Parallel()
	const (
		limit   = 512 << 10
		bound   = 3 * limit
		batches = 20
		batch   = 20
		maxRead = 1_000_000 // per reader, a bound on the loop
		hold    = time.Millisecond
	)
	entries := deliverEntries(batches * batch)
	for _, mode := range []string{"plaintext", "encrypted"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "mail.db")
			o := Options{Parser: mimeform.Parser{}}
			if mode == "encrypted" {
				o.Key = &devicedb.Key{9}
			}
			s, err := OpenWith(path, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			s.walLimit = limit
			ctx := context.Background()

			stop := make(chan struct{})
			var reads atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range maxRead {
						select {
						case <-stop:
							return
						default:
						}
						if err := readOnce(ctx, s.rdb, hold); err != nil {
							errs <- err
							return
						}
						reads.Add(1)
					}
				}()
			}
			var largest int64
			for i := 0; i < len(entries); i += batch {
				part := entries[i : i+batch]
				if _, err := s.Apply(ctx, part, part[len(part)-1].Pos); err != nil {
					t.Fatalf("Apply: %v", err)
				}
				settled(s)
				fi, err := os.Stat(path + "-wal")
				if err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				if err == nil {
					largest = max(largest, fi.Size())
				}
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("reading: %v", err)
			}
			if reads.Load() == 0 {
				t.Fatal("the readers read nothing")
			}
			if n := len(uidsOf(t, s, "INBOX")); n != batches*batch {
				t.Fatalf("INBOX holds %d messages, want %d", n, batches*batch)
			}
			t.Logf("%d reads; largest WAL %d bytes", reads.Load(), largest)
			if largest > bound {
				t.Errorf("the WAL reached %d bytes with a limit of %d, want at most %d", largest, limit, bound)
			}
			// Every batch is still there once the file is opened again.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = OpenWith(path, o); err != nil {
				t.Fatal(err)
			}
			if n := len(uidsOf(t, s, "INBOX")); n != batches*batch {
				t.Fatalf("reopened, INBOX holds %d messages, want %d", n, batches*batch)
			}
		})
	}
}

// readOnce runs one short read transaction, kept open for hold after its
// query.
func readOnce(ctx context.Context, db *sql.DB, hold time.Duration) error {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM messages").Scan(&n); err != nil {
		return err
	}
	time.Sleep(hold)
	return tx.Commit()
}

// TestBulkBatchDefersCheckpoint applies 400 deliveries of about 10 KB in
// one batch, which leaves more than SQLite's 1,000 pages of automatic
// checkpoint in the WAL: committed without it (wal.go, "Checkpoints
// during a catch-up"), the database file stays as it was and readers see
// every message; a batch of one then commits with the automatic
// checkpoint on again, which copies them all into the database file.
func TestBulkBatchDefersCheckpoint(t *testing.T) {
	t.Parallel()
	entries := deliverEntries(401)
	path := filepath.Join(t.TempDir(), "mail.db")
	s, err := OpenWith(path, Options{Parser: mimeform.Parser{}, Key: &devicedb.Key{9}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	size := func() int64 {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	if _, err := s.Apply(ctx, entries[:400], 400); err != nil {
		t.Fatal(err)
	}
	if got := size(); got != before {
		t.Errorf("after a batch of 400: database file %d bytes, want %d as before it (no checkpoint)", got, before)
	}
	if n := countMessages(t, s); n != 400 {
		t.Errorf("after a batch of 400: %d messages read, want 400", n)
	}
	if _, err := s.Apply(ctx, entries[400:], 401); err != nil {
		t.Fatal(err)
	}
	settled(s)
	if got := size(); got < before+400*10000 {
		t.Errorf("after a batch of 1: database file %d bytes, want the 400 messages' pages copied (%d bytes or more)", got, before+400*10000)
	}
}

// settled waits for the checkpoint an apply left to make, if any (wal.go,
// "After the apply"): it holds the store's write mutex until it ends.
func settled(s *Store) {
	s.mu.Lock()
	//lint:ignore SA2001 the wait for the mutex is the point
	s.mu.Unlock()
}

// TestApplyReturnsBeforeCheckpoint: the checkpoint an apply leads to runs
// after Apply has returned the batch, holding the store's writes until it
// ends. A batch of 400 deliveries commits without one; the batch of one
// after it, which SQLite's automatic checkpoint followed inside its commit,
// returns with the database file as it was, while that checkpoint is held
// back; once let go, it copies the 400 messages into the file, and the next
// write waits for it. Then a batch that takes the WAL over its bound returns
// before the bound's checkpoint, which then empties the WAL.
func TestApplyReturnsBeforeCheckpoint(t *testing.T) {
	t.Parallel()
	entries := deliverEntries(402)
	s, path, size := openSized(t)
	ctx := context.Background()
	before := size(path)
	if _, err := s.Apply(ctx, entries[:400], 400); err != nil {
		t.Fatal(err)
	}
	settled(s)
	release := make(chan struct{})
	held := make(chan struct{}, 2)
	s.settleHook = func() {
		held <- struct{}{}
		<-release
	}
	res, err := s.Apply(ctx, entries[400:401], 401)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Outcomes) != 1 || res.Outcomes[0].Status != Applied {
		t.Fatalf("the batch of one: outcomes %+v, want one applied", res.Outcomes)
	}
	if got := size(path); got != before {
		t.Fatalf("Apply of the batch of one returned with the database file at %d bytes, want %d: the checkpoint ran before it returned", got, before)
	}
	<-held
	close(release)
	settled(s)
	if got := size(path); got < before+400*10000 {
		t.Errorf("after the checkpoint: database file %d bytes, want the 400 messages' pages copied (%d bytes or more)", got, before+400*10000)
	}
	if n := countMessages(t, s); n != 401 {
		t.Errorf("%d messages read, want 401", n)
	}

	// The WAL's bound: a limit below what one delivery writes.
	s.mu.Lock()
	s.walLimit = 4 << 10
	s.mu.Unlock()
	release = make(chan struct{})
	if _, err := s.Apply(ctx, entries[401:], 402); err != nil {
		t.Fatal(err)
	}
	if got := size(path + "-wal"); got <= 4<<10 {
		t.Fatalf("Apply over the WAL's bound returned with the WAL at %d bytes: the bound's checkpoint ran before it returned", got)
	}
	<-held
	close(release)
	settled(s)
	if got := size(path + "-wal"); got != 0 {
		t.Errorf("after the bound's checkpoint: WAL of %d bytes, want it truncated", got)
	}
	if n := countMessages(t, s); n != 402 {
		t.Errorf("%d messages read, want 402", n)
	}
}

// TestWALCopiedBesideWriter: a commit that takes the WAL over half its
// bound leaves the copy of its frames to a PASSIVE checkpoint on a read
// connection and goes on (wal.go, "The copy beside the writer"): the WAL
// is not cut, and the frames reach the database file while the writer is
// free. A commit over the bound cuts it.
func TestWALCopiedBesideWriter(t *testing.T) {
	t.Parallel()
	entries := deliverEntries(101)
	s, path, size := openSized(t)
	ctx := context.Background()
	before := size(path)
	if _, err := s.Apply(ctx, entries[:100], 100); err != nil {
		t.Fatal(err)
	}
	settled(s)
	wal := size(path + "-wal")
	if wal == 0 || size(path) != before {
		t.Fatalf("after a batch of 100: WAL %d bytes, database %d bytes; want the frames in the WAL alone", wal, size(path))
	}
	// commitUnder sets the bound to limit and commits at pos (the
	// entries given, or none), and returns the copy beside the writer
	// that commit started, ended, or nil.
	commitUnder := func(limit int64, pos uint64, es []Entry) *passiveCopy {
		t.Helper()
		s.mu.Lock()
		s.walLimit = limit
		s.mu.Unlock()
		if _, err := s.Apply(ctx, es, pos); err != nil {
			t.Fatal(err)
		}
		settled(s)
		s.mu.Lock()
		p := s.passive
		s.mu.Unlock()
		if p != nil {
			<-p.done
		}
		return p
	}
	// A bound the WAL is at two thirds of: no copy yet (a first sync of
	// 3,000 messages ends about there; its pages are copied after it).
	if p := commitUnder(wal*3/2, 101, entries[100:]); p != nil {
		t.Fatalf("a copy beside the writer started at two thirds of the bound (WAL %d bytes, bound %d); want it from three quarters", size(path+"-wal"), wal*3/2)
	}
	// A bound the WAL is over three quarters of.
	if p := commitUnder(wal*5/4, 102, nil); p == nil {
		t.Fatalf("no copy beside the writer started over three quarters of the bound (WAL %d bytes, bound %d)", size(path+"-wal"), wal*5/4)
	}
	if got := size(path + "-wal"); got < wal {
		t.Fatalf("after the copy beside the writer: WAL %d bytes, want it not cut (%d or more)", got, wal)
	}
	if got := size(path); got < before+100*10000 {
		t.Errorf("after the copy beside the writer: database file %d bytes, want the 100 messages' pages copied (%d bytes or more)", got, before+100*10000)
	}
	// A commit over the bound cuts the WAL.
	commitUnder(wal*3/4, 103, nil)
	if got := size(path + "-wal"); got != 0 {
		t.Errorf("after the next commit: WAL %d bytes, want it cut", got)
	}
	if n := countMessages(t, s); n != 101 {
		t.Errorf("%d messages read, want 101", n)
	}
}

func countMessages(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// openSized opens a new encrypted store for the WAL tests, with its file's
// path and a function that gives a file's size.
func openSized(t *testing.T) (s *Store, path string, size func(name string) int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "mail.db")
	s, err := OpenWith(path, Options{Parser: mimeform.Parser{}, Key: &devicedb.Key{9}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path, func(name string) int64 {
		t.Helper()
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
}
