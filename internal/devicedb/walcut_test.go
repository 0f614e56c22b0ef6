package devicedb

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWALCutInsideABlock opens copies of an encrypted database whose WAL
// was cut short at every kind of place (a whole block, inside a block,
// inside the last frame): as a copy of a running device's folder taken in
// the middle of a write leaves it. Each opens, with the commits whose
// frames are whole. Before, a WAL ending inside a block failed every open
// with "disk I/O error": SQLite's recovery read a frame into the part
// block that cannot be decrypted.
func TestWALCutInsideABlock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	key := Key{9}
	db, err := Open(path, Options{Key: &key, Params: "_pragma=journal_mode(wal)&_pragma=wal_autocheckpoint(0)"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t (x BLOB)"); err != nil {
		t.Fatal(err)
	}
	const rows = 40
	for range rows {
		if _, err := db.Exec("INSERT INTO t VALUES (randomblob(3000))"); err != nil {
			t.Fatal(err)
		}
	}
	wal, err := os.ReadFile(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{0, 1, 100, 3000, blockSize, blockSize + 1000, 3*blockSize + 7} {
		c := filepath.Join(dir, fmt.Sprint(cut))
		if err := os.Mkdir(c, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c, "a.db"), main, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c, "a.db-wal"), wal[:len(wal)-cut], 0o600); err != nil {
			t.Fatal(err)
		}
		copied, err := Open(filepath.Join(c, "a.db"), Options{Key: &key})
		if err != nil {
			t.Errorf("WAL cut %d bytes short: open: %v", cut, err)
			continue
		}
		var n int
		if err := copied.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Errorf("WAL cut %d bytes short (its end %d bytes into a block): %v", cut, (len(wal)-cut)%blockSize, err)
		} else if lost := (cut + blockSize - 1) / 3000; n > rows || n < rows-lost-1 || (cut == 0 && n != rows) {
			t.Errorf("WAL cut %d bytes short: %d rows, want %d less those whose frames the cut reached", cut, n, rows)
		}
		copied.Close()
	}
}
