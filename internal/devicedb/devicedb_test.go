package devicedb

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const token = "zebra-token-71c3"

var key1, key2 = Key{1}, Key{2}

const walParams = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func count(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM t WHERE x LIKE '%' || ? || '%'", token).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// leaks reports the files under dir that hold the token in plaintext.
func leaks(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(token)) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// digests returns the SHA-256 of every file under dir.
func digests(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

func TestEncryptedAndWrongKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.db")
	db, err := Open(path, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "PRAGMA wal_autocheckpoint = 0")
	mustExec(t, db, "CREATE TABLE t (x TEXT)")
	for i := 0; i < 200; i++ {
		mustExec(t, db, "INSERT INTO t VALUES (? || ?)", strings.Repeat("padding ", 20), token)
	}
	if info, _ := os.Stat(path + "-wal"); info == nil || info.Size() == 0 {
		t.Fatal("no WAL content to protect: the test proves nothing")
	}
	// A copy taken now is what a crash leaves: committed rows in the WAL
	// only.
	crash := filepath.Join(t.TempDir(), "mail.db")
	for _, s := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crash+s, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if l := leaks(t, dir); len(l) != 0 {
		t.Errorf("plaintext token in %v", l)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	before := digests(t, filepath.Dir(crash))
	for _, tc := range []struct {
		name string
		key  *Key
		want error
	}{{"wrong key", &key2, ErrWrongKey}, {"no key", nil, ErrEncrypted}} {
		if _, err := Open(crash, Options{Key: tc.key, Params: walParams}); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), crash) {
			t.Errorf("%s: %v, want %v naming the file", tc.name, err, tc.want)
		}
	}
	after := digests(t, filepath.Dir(crash))
	if len(before) != len(after) {
		t.Fatalf("files before %d, after the refused opens %d", len(before), len(after))
	}
	for name, d := range before {
		if after[name] != d {
			t.Errorf("%s changed on a refused open", name)
		}
	}
	good, err := Open(crash, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if n := count(t, good); n != 200 {
		t.Fatalf("after the refused opens the right key finds %d rows, want 200", n)
	}
}

func TestMigratePlaintext(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.db")
	plain, err := Open(path, Options{Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, plain, "PRAGMA wal_autocheckpoint = 0")
	mustExec(t, plain, "PRAGMA application_id = 1666428209")
	mustExec(t, plain, "CREATE TABLE t (x TEXT)")
	for i := 0; i < 300; i++ {
		mustExec(t, plain, "INSERT INTO t VALUES (? || ?)", strings.Repeat("padding ", 20), token)
	}
	// Leave a plaintext WAL behind as a crash would: copy the files while
	// the connection holds them, then work on the copy.
	crashDir := t.TempDir()
	crash := filepath.Join(crashDir, "mail.db")
	for _, s := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + s)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(crash+s, b, 0o600)
	}
	plain.Close()
	if st, _ := Inspect(crash, &key1); st != Plaintext {
		t.Fatalf("Inspect of the plaintext copy: %v", st)
	}
	// A partial copy from an earlier, interrupted migration is discarded.
	if err := os.WriteFile(crash+".encrypting", []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}

	db, err := Open(crash, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, db); n != 300 {
		t.Errorf("after the migration %d rows, want 300", n)
	}
	var id int64
	db.QueryRow("PRAGMA application_id").Scan(&id)
	if id != 1666428209 {
		t.Errorf("application id %d after the migration", id)
	}
	mustExec(t, db, "INSERT INTO t VALUES (?)", token)
	db.Close()
	if st, err := Inspect(crash, &key1); st != Encrypted || err != nil {
		t.Errorf("after the migration: %v, %v; want Encrypted", st, err)
	}
	if l := leaks(t, crashDir); len(l) != 0 {
		t.Errorf("plaintext token after the migration in %v", l)
	}
	if _, err := os.Stat(crash + ".encrypting"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the migration left its copy behind: %v", err)
	}

	// NoMigrate leaves a plaintext file alone.
	ro := filepath.Join(dir, "mail.db")
	r, err := Open(ro, Options{Key: &key1, NoMigrate: true, Params: "mode=ro"})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, r); n != 300 {
		t.Errorf("NoMigrate read %d rows", n)
	}
	r.Close()
	if st, _ := Inspect(ro, nil); st != Plaintext {
		t.Errorf("NoMigrate changed the file: %v", st)
	}
}

func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{Key: &key1}); !errors.Is(err, ErrWrongKey) {
		t.Errorf("another program's file: %v, want ErrWrongKey", err)
	}
}
