package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

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

// TestDeviceDiskFills: the disk holding a running daemon's database fills
// to its last byte while the device is up to date and mail arrives. A
// change from a mail client was sent to the log and then waited for an
// apply the full disk failed, 2 minutes, before NO [UNAVAILABLE] "the
// change was sent to the spool but is not applied yet" (a change made,
// shown once space was freed); a change queued got NO [SERVERBUG], and the
// log said "sqlite3: disk I/O error" with no word of the disk. Now the
// change is refused before it is sent, NO [OVERQUOTA] saying the disk is
// full, and nothing is changed; the log names the file and says no space
// is left; reads are served throughout, the connection lives, no alarm,
// and once space is freed the daemon applies the mail delivered meanwhile
// by itself and takes changes again.
func TestDeviceDiskFills(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	mnt := filepath.Join(t.TempDir(), "device")
	testproc.MountTmpfs(t, mnt, "16m")
	env := os.Environ()
	port, lmtpPort := freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--spool-dir", "spool", "--users", usersPath, "--spool-key", "spool.sec", "--lmtp", fmt.Sprintf("127.0.0.1:%d", lmtpPort))
	waitHealthy(t, url, server)
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", lmtpPort), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lc := smtp.NewClientLMTP(conn)
	defer lc.Close()
	deliver := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := lc.SendMail("sender@example.net", []string{"alice@example.org"}, strings.NewReader(fmt.Sprintf("Subject: m%d\r\n\r\nbody %d\r\n", i, i))); err != nil {
				t.Fatalf("delivering message %d: %v", i, err)
			}
		}
	}
	db := filepath.Join(mnt, "alice.db")
	// awaitPosition waits for the daemon to be up to date with the
	// spool's head, which must be n: the changes refused made no entry.
	awaitPosition := func(n int, within time.Duration) {
		t.Helper()
		out := ""
		for deadline := time.Now().Add(within); ; time.Sleep(200 * time.Millisecond) {
			_, out, _ = runExit(t, dir, env, bin, "status", "--db", db)
			var pos, head int
			_, rest, _ := strings.Cut(out, "Position:")
			if _, err := fmt.Sscanf(rest, "%d of %d", &pos, &head); err == nil && pos == head && pos >= n {
				if pos != n {
					t.Fatalf("the log holds %d entries, want %d: a change answered NO is in it; cspool status:\n%s", pos, n, out)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the daemon did not apply position %d within %v; cspool status:\n%s", n, within, out)
			}
		}
	}
	deliver(0, 5)
	imapPort := freePort(t)
	daemon := startProc(t, "cspool imap-server", dir, env, bin, "imap-server", "--port", fmt.Sprint(imapPort), "--status-addr", "",
		"--smtp-port", "0", "--db", db, "--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub",
		"--spool-key", "spool.pub", "--spool-server", url)
	pw := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))
	awaitPosition(5, 60*time.Second)

	// The disk fills, to its last byte.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{64 << 10, 4 << 10, 1} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				break
			}
		}
	}
	f.Close()

	c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", imapPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", pw).Wait(); err != nil {
		t.Fatalf("LOGIN on a full disk: %v", err)
	}
	if sel, err := c.Select("INBOX", nil).Wait(); err != nil || sel.NumMessages != 5 {
		t.Fatalf("SELECT INBOX on a full disk: %v (%+v); want 5 messages", err, sel)
	}
	bodies, err := c.Fetch(imap.SeqSetNum(1, 2, 3, 4, 5), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(bodies) != 5 {
		t.Fatalf("FETCH of the bodies on a full disk: %v (%d messages); want 5", err, len(bodies))
	}
	full := func(what string, err error) {
		t.Helper()
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeOverQuota || !strings.Contains(ie.Text, "disk is full") {
			t.Errorf("%s on a full disk: %v; want NO [OVERQUOTA] saying the disk is full", what, err)
		}
	}
	full("STORE", c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close())
	msg := []byte("Subject: a\r\n\r\nappended on a full disk\r\n")
	appendCmd := c.Append("INBOX", int64(len(msg)), nil)
	if _, err := appendCmd.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := appendCmd.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = appendCmd.Wait()
	full("APPEND", err)
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("NOOP after the refusals: %v", err)
	}

	// Mail arrives; the daemon says why it does not apply it.
	deliver(5, 8)
	log := daemon.stderr
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(log.String(), "applying to the local store failed"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not log the failed apply within 30 s; its log:\n%s", log)
		}
	}
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "applying to the local store failed") && !strings.Contains(line, "no space left on the file system of "+db) {
			t.Errorf("the failed apply's line does not name %s and say no space is left: %s", db, line)
		}
	}
	if _, out, _ := runExit(t, dir, env, bin, "status", "--db", db); strings.Contains(out, "ALARM") {
		t.Errorf("an integrity alarm on a full disk:\n%s", out)
	}

	// Space freed: the mail delivered meanwhile applies by itself (the
	// loop's backoff is at most 30 s), and changes are taken again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	awaitPosition(8, 90*time.Second)
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Errorf("STORE once space is freed: %v", err)
	}
	// The APPEND refused made nothing: INBOX holds the 8 deliveries.
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || st.NumMessages == nil || *st.NumMessages != 8 {
		t.Errorf("STATUS INBOX once space is freed: %v (%+v); want the 8 messages delivered and no other", err, st)
	}
	if _, out, _ := runExit(t, dir, env, bin, "status", "--db", db); strings.Contains(out, "ALARM") || !strings.Contains(out, "Rejected:      0") {
		t.Errorf("after the disk was full: want no alarm and nothing rejected; cspool status:\n%s", out)
	}
}
