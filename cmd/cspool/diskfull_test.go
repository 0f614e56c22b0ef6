package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/devicedb"
	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/testproc"
)

// TestStoreOnFullDisk: a daemon started with --db on a full file system
// said "disk I/O error" with the hint to check that the directory exists
// and is writable, which it is; under systemd it restarts every few
// seconds with that line. Now the error says the disk is full and the
// hint names the file system to free space on. The same for the spool
// server's --spool-dir, whose error said "storage full" already, with
// the hint to check that the directory is writable.
func TestStoreOnFullDisk(t *testing.T) {
	t.Parallel()
	mnt := filepath.Join(t.TempDir(), "full")
	testproc.MountTmpfs(t, mnt, "4m")
	f, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	dbPath := filepath.Join(mnt, "mail.db")
	_, err = openMailStore(io.Discard, dbPath, mustKey(t), false)
	var h *hintError
	if !errors.Is(err, devicedb.ErrDiskFull) || !errors.As(err, &h) || !strings.Contains(h.hint, "free space on the file system that holds "+mnt) {
		t.Fatalf("opening a store on a full disk: %v (hint %+v); want ErrDiskFull and a hint to free space on %s", err, h, mnt)
	}
	sr := &serverRun{log: slog.New(slog.DiscardHandler)}
	dir := filepath.Join(mnt, "spool")
	st, err := sr.openStore(serverFlags{spoolDir: dir})
	if err == nil {
		st.Close()
		t.Fatal("a spool opened on a full disk")
	}
	if !errors.Is(err, spool.ErrFull) || !errors.As(err, &h) || !strings.Contains(h.hint, "free space on the file system that holds "+dir) {
		t.Fatalf("opening a spool on a full disk: %v (hint %+v); want ErrFull and a hint to free space on %s", err, h, dir)
	}
}

// TestDamagedSpoolHint: a spool database SQLite finds damaged got the hint
// to check that --spool-dir is writable, which it is; now the hint says
// the file is damaged and how to restore the spool.
func TestDamagedSpoolHint(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "spool")
	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db := filepath.Join(dir, sqlitestore.DBName)
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for i := 100; i < len(b); i++ {
		b[i] = 0xA5
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sr := &serverRun{log: slog.New(slog.DiscardHandler)}
	st2, err := sr.openStore(serverFlags{spoolDir: dir})
	if err == nil {
		st2.Close()
		t.Skip("SQLite opened the damaged file without reading the damage")
	}
	var h *hintError
	if !errors.As(err, &h) || !strings.Contains(h.hint, "is damaged") || strings.Contains(h.hint, "user can write") {
		t.Errorf("a damaged spool database: %v (hint %+v), want the damage named", err, h)
	}
}

// TestDamagedSpoolHintPastOpen: a spool database whose first page is whole
// and the rest damaged (a disk failing in the middle of the file) opens,
// and the damage is met when the server records its spool key. That
// stopped the server with "recording the spool key: database disk image is
// malformed", naming no file and giving no hint; now it gets the damaged
// spool's hint, as a damage met at the open does.
func TestDamagedSpoolHintPastOpen(t *testing.T) {
	t.Parallel()
	bin := buildServerBinary(t)
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	st, err := sqlitestore.Open(spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db := filepath.Join(spoolDir, sqlitestore.DBName)
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4096; i < len(b); i++ {
		b[i] = 0xFF
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CREDENTIALS_DIRECTORY=")
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	code, _, stderr := runExit(t, dir, env, bin, "server", "--port", "0", "--spool-dir", spoolDir, "--spool-key", "spool.sec")
	if code == 0 {
		t.Fatalf("cspool server on a damaged spool: exit 0\n%s", stderr)
	}
	if !strings.Contains(stderr, "malformed") {
		t.Skipf("the damage was not met at the start:\n%s", stderr)
	}
	if !strings.Contains(stderr, "hint: the spool's database in "+spoolDir+" is damaged") {
		t.Errorf("cspool server on a spool damaged past its first page: exit %d, want the damaged spool's hint naming %s:\n%s", code, spoolDir, stderr)
	}
}
