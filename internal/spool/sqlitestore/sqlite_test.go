package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"cspool/internal/spool"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// rawDB opens the spool database directly, as another program would.
func rawDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, DBName)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// holdWriteLock takes the database's write lock from another connection and
// returns the function that releases it.
func holdWriteLock(t *testing.T, dir string) (release func()) {
	t.Helper()
	db := rawDB(t, dir)
	conn, err := db.Conn(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctxT(t), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("taking the write lock: %v", err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
				t.Errorf("releasing the write lock: %v", err)
			}
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

func TestFileModes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "spool")
	s := openT(t, dir, Options{})
	if err := s.HoldSpoolKey(ctxT(t), bytes.Repeat([]byte{0xa}, 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctxT(t), "u", [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		dir:                               os.ModeDir | 0o700,
		filepath.Join(dir, DBName):        0o600,
		filepath.Join(dir, "notify"):      os.ModeDir | 0o700,
		filepath.Join(dir, DBName+"-wal"): 0o600,
		filepath.Join(dir, HoldLockName):  0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat: %v", err)
			continue
		}
		if fi.Mode()&(os.ModeDir|os.ModePerm) != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
}

func TestReopenKeepsLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	if _, err := s.Append(ctxT(t), "u", [][]byte{[]byte("a"), []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	first, err := s.Append(ctxT(t), "u", [][]byte{[]byte("c")})
	if err != nil || first != 3 {
		t.Fatalf("Append after reopen: %d, %v; want 3", first, err)
	}
	var v int
	if err := rawDB(t, dir).QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("user_version %d, %v; want %d", v, err, SchemaVersion)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	s.Close()
	if _, err := rawDB(t, dir).Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a newer schema: %v, want ErrNewerSchema", err)
	}
}

func TestRefusesForeignDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := rawDB(t, dir).Exec("CREATE TABLE mail (id INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrNotSpool) {
		t.Fatalf("Open of another program's database: %v, want ErrNotSpool", err)
	}
}

func TestHeadNeverDecreases(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	if _, err := s.Append(ctxT(t), "u", [][]byte{[]byte("a"), []byte("b")}); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, dir)
	if _, err := db.Exec("UPDATE users SET head = 1"); err == nil {
		t.Fatal("lowering a head was accepted")
	}
	// Deleting entries (as compaction will) leaves holes: positions go on.
	if _, err := db.Exec("DELETE FROM entries WHERE pos = 2"); err != nil {
		t.Fatal(err)
	}
	first, err := s.Append(ctxT(t), "u", [][]byte{[]byte("c")})
	if err != nil || first != 3 {
		t.Fatalf("Append after deleting the last entry: %d, %v; want 3", first, err)
	}
	es, err := s.Read(ctxT(t), "u", 0, 10, 1<<20)
	if err != nil || len(es) != 2 || es[0].Pos != 1 || es[1].Pos != 3 {
		t.Fatalf("Read across a hole: %v, %v; want positions 1 and 3", es, err)
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	s := openT(t, t.TempDir(), Options{MaxAppendBytes: 100})
	_, err := s.Append(ctxT(t), "u", [][]byte{make([]byte, 60), make([]byte, 41)})
	if !errors.Is(err, spool.ErrTooLarge) {
		t.Fatalf("Append over MaxAppendBytes: %v, want ErrTooLarge", err)
	}
	if _, err := s.Append(ctxT(t), "u", [][]byte{make([]byte, 100)}); err != nil {
		t.Fatalf("Append at MaxAppendBytes: %v", err)
	}
}

func TestLockedTooLongIsUnavailable(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{BusyTimeout: 200 * time.Millisecond})
	release := holdWriteLock(t, dir)
	_, err := s.Append(ctxT(t), "u", [][]byte{[]byte("x")})
	if !errors.Is(err, spool.ErrUnavailable) {
		t.Fatalf("Append while another process holds the lock: %v, want ErrUnavailable", err)
	}
	release()
	first, err := s.Append(ctxT(t), "u", [][]byte{[]byte("x")})
	if err != nil || first != 1 {
		t.Fatalf("Append after the lock is released: %d, %v; want 1 (nothing of the failed one)", first, err)
	}
}

// appendConcurrently runs n Append calls at once, each of one 100-byte
// entry, while the write lock is held elsewhere, then releases the lock.
func appendConcurrently(t *testing.T, s *Store, n int, release func()) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append(ctxT(t), fmt.Sprintf("u%d", i%3), [][]byte{make([]byte, 100)}); err != nil {
				t.Errorf("Append: %v", err)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // let the calls queue behind the lock
	release()
	wg.Wait()
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	appendConcurrently(t, s, 32, holdWriteLock(t, dir))
	st := s.Stats()
	if st.Appends != 32 || st.Entries != 32 {
		t.Fatalf("stats %+v, want 32 appends of one entry", st)
	}
	// The first call waits for the lock alone; the others queue and share.
	if st.Commits > 8 {
		t.Errorf("32 queued appends took %d commits, want them grouped (at most 8)", st.Commits)
	}
	t.Logf("32 appends in %d commits", st.Commits)
}

func TestGroupLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		opts       Options
		minCommits int64
	}{
		{"count", Options{MaxGroupCount: 4}, 32 / 4},
		{"bytes", Options{MaxGroupBytes: 250}, 32 / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, tc.opts)
			appendConcurrently(t, s, 32, holdWriteLock(t, dir))
			if st := s.Stats(); st.Commits < tc.minCommits || st.Appends != 32 {
				t.Errorf("32 appends with %+v: %+v, want at least %d commits", tc.opts, st, tc.minCommits)
			}
		})
	}
}

// TestHugeEntry appends a 50 MB entry and checks that reading past it, or
// reading only the small entry before it, does not load it.
func TestHugeEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB entry")
	}
	s := openT(t, t.TempDir(), Options{})
	huge := bytes.Repeat([]byte("0123456789abcdef\x00"), 50<<20/17)
	if _, err := s.Append(ctxT(t), "u", [][]byte{[]byte("small"), huge, []byte("tail")}); err != nil {
		t.Fatalf("Append of %d bytes: %v", len(huge), err)
	}
	allocs := func(f func()) uint64 {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		f()
		runtime.ReadMemStats(&m1)
		return m1.TotalAlloc - m0.TotalAlloc
	}
	var es []spool.Entry
	var err error
	for _, tc := range []struct {
		after    uint64
		maxBytes int64
		want     string
	}{
		{0, 10, "small"},
		{2, 1 << 30, "tail"},
	} {
		a := allocs(func() { es, err = s.Read(ctxT(t), "u", tc.after, 10, tc.maxBytes) })
		if err != nil || len(es) != 1 || string(es[0].Data) != tc.want {
			t.Fatalf("Read(after %d, maxBytes %d): %d entries, %v; want only %q", tc.after, tc.maxBytes, len(es), err, tc.want)
		}
		if a > 10<<20 {
			t.Errorf("Read(after %d, maxBytes %d) allocated %d bytes: it loaded the huge entry", tc.after, tc.maxBytes, a)
		}
	}
	es, err = s.Read(ctxT(t), "u", 1, 10, 0)
	if err != nil || len(es) != 1 || !bytes.Equal(es[0].Data, huge) {
		t.Fatalf("Read of the huge entry: %d entries, %v", len(es), err)
	}
}

// TestKeyLockMode: the spool key's lock file takes the database file's
// permission bits, whatever the umask, as SQLite's -wal and -shm files
// do, so that whoever the operator lets open the database (a group, for
// cspool deliver run as the recipient) may hold the key too; holding needs
// only to read it.
func TestKeyLockMode(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "spool")
	s := openT(t, dir, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, DBName), 0o660); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if err := s.HoldSpoolKey(ctxT(t), bytes.Repeat([]byte{0xa}, 64)); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, HoldLockName)
	if fi, err := os.Stat(lock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("lock file beside a database of mode 0660: %v, %v; want mode 0660", fi.Mode(), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(lock, 0o440); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if err := s.HoldSpoolKey(ctxT(t), bytes.Repeat([]byte{0xa}, 64)); err != nil {
		t.Fatalf("holding through a lock file this process may only read: %v", err)
	}
}
