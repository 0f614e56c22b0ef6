package sqlitestore

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/spool"
)

func pragmaInt(t *testing.T, s *Store, name string) int64 {
	t.Helper()
	var v int64
	if err := s.rdb.QueryRowContext(ctxT(t), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

// fileSize returns the size of the database file after moving the WAL's
// content into it.
func fileSize(t *testing.T, s *Store) int64 {
	t.Helper()
	if _, err := s.wdb.ExecContext(ctxT(t), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatalf("checkpointing the WAL: %v", err)
	}
	fi, err := os.Stat(filepath.Join(s.dir, DBName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestCompactShrinksFile: a new database has auto_vacuum=INCREMENTAL, and
// after a compaction its free pages are returned and the file shrinks.
func TestCompactShrinksFile(t *testing.T) {
	t.Parallel()
	s := openT(t, t.TempDir(), Options{})
	if av := pragmaInt(t, s, "auto_vacuum"); av != 2 {
		t.Fatalf("auto_vacuum = %d on a new database, want 2 (INCREMENTAL)", av)
	}
	entry := make([]byte, 20_000)
	for i := 0; i < 10; i++ {
		batch := make([][]byte, 50)
		for j := range batch {
			batch[j] = entry
		}
		if _, err := s.Append(ctxT(t), "big", batch); err != nil {
			t.Fatal(err)
		}
	}
	before, pagesBefore := fileSize(t, s), pragmaInt(t, s, "page_count")
	st, err := s.Compact(ctxT(t), "big", spool.Checkpoint{Pos: 490, Data: []byte("cp")}, []uint64{7})
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != 489 || st.Kept != 1 || st.Bytes != 489*20_000 {
		t.Errorf("Compact stats %+v, want 489 deleted (9,780,000 bytes), 1 kept", st)
	}
	if free := pragmaInt(t, s, "freelist_count"); free != 0 {
		t.Errorf("%d free pages left after compaction, want 0", free)
	}
	after, pagesAfter := fileSize(t, s), pragmaInt(t, s, "page_count")
	t.Logf("database file %d -> %d bytes (%d -> %d pages)", before, after, pagesBefore, pagesAfter)
	if after > before/10 {
		t.Errorf("database file %d bytes after deleting 98%% of %d bytes, want under a tenth", after, before)
	}
	es, err := s.Read(ctxT(t), "big", 0, 100, 1<<30)
	if err != nil || len(es) != 11 || es[0].Pos != 7 || es[1].Pos != 491 {
		t.Fatalf("Read after compaction: %d entries, %v; want 7 and 491..500", len(es), err)
	}
}

// TestMigrateFromVersion1: a spool created at schema version 1 gets the
// checkpoints table, keeps its entries and its auto_vacuum=NONE, and
// compaction works on it (free pages are reused, the file does not shrink).
func TestMigrateFromVersion1(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version1Spool(t, dir)
	s := openT(t, dir, Options{})
	if v := pragmaInt(t, s, "user_version"); v != int64(SchemaVersion) {
		t.Fatalf("user_version %d after Open, want %d", v, SchemaVersion)
	}
	if av := pragmaInt(t, s, "auto_vacuum"); av != 0 {
		t.Errorf("auto_vacuum %d on a migrated database, want 0 (unchanged)", av)
	}
	if _, err := s.LatestCheckpoint(ctxT(t), "old"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Fatalf("LatestCheckpoint on a migrated spool: %v, want ErrNoCheckpoint", err)
	}
	if _, err := s.Compact(ctxT(t), "old", spool.Checkpoint{Pos: 2, Data: []byte("cp")}, nil); err != nil {
		t.Fatalf("Compact on a migrated spool: %v", err)
	}
	es, err := s.Read(ctxT(t), "old", 0, 10, 1<<20)
	if err != nil || len(es) != 1 || es[0].Pos != 3 || string(es[0].Data) != "c" {
		t.Fatalf("Read after compaction: %v, %v; want entry 3 alone", es, err)
	}
	if pos, err := s.CheckpointPos(ctxT(t), "old"); err != nil || pos != 2 {
		t.Errorf("CheckpointPos = %d, %v; want 2", pos, err)
	}
}

// version1Spool makes in dir a spool of schema version 1, as its release
// made them (auto_vacuum NONE), with user "old" holding entries 1 to 3:
// "a", "b", "c".
func version1Spool(t *testing.T, dir string) {
	t.Helper()
	db := rawDB(t, dir)
	for _, q := range []string{
		"PRAGMA journal_mode = WAL",
		fmt.Sprintf("PRAGMA application_id = %d", applicationID),
		migrations[0],
		"PRAGMA user_version = 1",
		"INSERT INTO users (name, head) VALUES (CAST('old' AS BLOB), 3)",
		"INSERT INTO entries (user_id, pos, size, data) VALUES (1, 1, 1, x'61'), (1, 2, 1, x'62'), (1, 3, 1, x'63')",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("building a version 1 spool: %s: %v", q, err)
		}
	}
	db.Close()
}

// TestAutoVacuumRecipe runs docs/STORE.md's command that converts a
// database made before schema version 2 to auto_vacuum = INCREMENTAL
// ("Space reclamation"), as printed but for SPOOL_DIR, with sqlite3 on a
// version 1 spool the store migrated and wrote to: afterwards the store
// opens it with every entry, auto_vacuum is 2 as the text says, and a
// compaction shrinks the file.
func TestAutoVacuumRecipe(t *testing.T) {
	t.Parallel()
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("sqlite3 is required in CI (Debian package sqlite3): %v", err)
		}
		t.Skip("sqlite3 not installed (apt-get install sqlite3)")
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "STORE.md"))
	if err != nil {
		t.Fatal(err)
	}
	var recipe []string
	for _, l := range strings.Split(string(doc), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "sqlite3 SPOOL_DIR/") {
			recipe = append(recipe, l)
		}
	}
	if len(recipe) != 1 || !strings.Contains(recipe[0], "auto_vacuum") {
		t.Fatalf("docs/STORE.md: commands %q, want one: sqlite3 SPOOL_DIR/spool.db, setting auto_vacuum", recipe)
	}
	dir := t.TempDir()
	version1Spool(t, dir)
	s := openT(t, dir, Options{})
	entry := make([]byte, 20_000)
	batch := make([][]byte, 200)
	for j := range batch {
		batch[j] = entry
	}
	if _, err := s.Append(ctxT(t), "old", batch); err != nil {
		t.Fatal(err)
	}
	if av := pragmaInt(t, s, "auto_vacuum"); av != 0 {
		t.Fatalf("auto_vacuum %d on a migrated database before the recipe, want 0", av)
	}
	s.Close()

	// Stopped, the command as printed; sqlite3 first on PATH.
	cmd := exec.Command("sh", "-e", "-c", strings.ReplaceAll(recipe[0], "SPOOL_DIR", dir))
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(sqlite3)+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", recipe[0], err, out)
	}

	s = openT(t, dir, Options{})
	if av := pragmaInt(t, s, "auto_vacuum"); av != 2 {
		t.Fatalf("auto_vacuum %d after docs/STORE.md's command, want 2 (INCREMENTAL)", av)
	}
	if es, err := s.Read(ctxT(t), "old", 0, 1000, 1<<30); err != nil || len(es) != 203 || string(es[0].Data) != "a" {
		t.Fatalf("Read after the command: %d entries, %v; want 203, the first \"a\"", len(es), err)
	}
	before := fileSize(t, s)
	if _, err := s.Compact(ctxT(t), "old", spool.Checkpoint{Pos: 202, Data: []byte("cp")}, nil); err != nil {
		t.Fatal(err)
	}
	if after := fileSize(t, s); after > before/4 {
		t.Errorf("database file %d bytes after compacting 4 MB out of %d bytes, want under a quarter: the free pages were not returned", after, before)
	}
}

// TestCheckpointPosNeverDecreases: the schema itself refuses to move a
// checkpoint back, whatever the code above it does.
func TestCheckpointPosNeverDecreases(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	if _, err := s.Append(ctxT(t), "u", [][]byte{{1}, {2}, {3}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctxT(t), "u", spool.Checkpoint{Pos: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rawDB(t, dir).Exec("UPDATE checkpoints SET pos = 1"); err == nil {
		t.Fatal("moving a checkpoint back was allowed by the schema")
	}
	if pos, err := s.CheckpointPos(ctxT(t), "u"); err != nil || pos != 2 {
		t.Errorf("CheckpointPos = %d, %v; want 2", pos, err)
	}
	if pos, err := s.CheckpointPos(ctxT(t), "other"); err != nil || pos != 0 {
		t.Errorf("CheckpointPos of a user without one = %d, %v; want 0", pos, err)
	}
}

func TestCompactClosed(t *testing.T) {
	t.Parallel()
	s := openT(t, t.TempDir(), Options{})
	s.Close()
	if _, err := s.Compact(ctxT(t), "u", spool.Checkpoint{Pos: 1}, nil); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("Compact after Close: %v, want ErrClosed", err)
	}
	if _, err := s.LatestCheckpoint(ctxT(t), "u"); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("LatestCheckpoint after Close: %v, want ErrClosed", err)
	}
	if _, err := s.CheckpointPos(ctxT(t), "u"); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("CheckpointPos after Close: %v, want ErrClosed", err)
	}
}
