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
