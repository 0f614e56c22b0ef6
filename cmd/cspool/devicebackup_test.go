package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/mailstore"
	"cspool/internal/statuspage"
)

// stateDir is the folder of d's database, as the systemd recipe makes it.
func (d *deviceDaemon) stateDir() string { return filepath.Dir(d.db) }

// copyState copies the folder from to the path to, replacing what is there,
// as a backup tool does with the daemon stopped (cp -a of the folder).
func copyState(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	runCmd(t, filepath.Dir(from), nil, "", "/bin/cp", "-a", from, to)
}

// restoreDevice runs docs/OPERATING.md's "Restoring a device from its own
// backup" as written on d, from the backup of d's home under root,
// stopping and starting its daemon where it says, and returns what it
// printed.
func (s *restoreSetup) restoreDevice(t *testing.T, d *deviceDaemon, root string) string {
	t.Helper()
	steps := recipe(t, "### Restoring a device from its own backup")
	if len(steps) != 1 {
		t.Fatalf("docs/OPERATING.md, Restoring a device from its own backup: shell blocks %q, want 1", steps)
	}
	return runRecipe(t, steps[0], d.home, s.deviceEnv(d), []string{"/backup/home/alice", root}, func(l string) {
		switch l {
		case "systemctl --user stop cspool-imap@alice":
			if !d.daemon.exited {
				d.stop(t)
			}
		case "systemctl --user start cspool-imap@alice":
			s.start(t, d)
		default:
			t.Fatalf("unexpected %q in the recipe", l)
		}
	})
}

// countSubject counts the messages of view whose Subject is subject.
func countSubject(v clientView, subject string) int {
	n := 0
	for _, mb := range v {
		for _, m := range mb.Messages {
			if m[1] == subject {
				n++
			}
		}
	}
	return n
}

// backupQueued stops the spool server, has device a flag msg and APPEND
// "queued draft" (queued, the spool away), and backs a's folder up with
// its daemon stopped under root (a home folder's copy, the folder at
// backup); then it starts a and the server again, which sends the queue,
// and waits until it has: mail delivered before that takes the UIDs the
// queued APPEND was shown at, and every device, a and the restored one,
// then rightly gives INBOX a UIDVALIDITY of its own (under load the tests
// that follow delivered so and failed: the queue was not waited for).
func (s *restoreSetup) backupQueued(t *testing.T, a *deviceDaemon, msg string) (root, backup string) {
	t.Helper()
	s.server.stop(t, syscall.SIGTERM, 45*time.Second)
	s.imap(t, a, []string{"flag", "INBOX", msg, `\Flagged`}, []string{"append", "INBOX", "queued draft"})
	a.stop(t)
	root = filepath.Join(s.dir, "backup")
	backup = filepath.Join(root, ".local", "state", "cspool", "alice")
	if err := os.MkdirAll(filepath.Dir(backup), 0o700); err != nil {
		t.Fatal(err)
	}
	copyState(t, a.stateDir(), backup)
	s.start(t, a)
	s.startServer(t)
	a.report(t, "the queue sent", func(r *statuspage.Report) bool { return r.Sync.Queued == 0 })
	return root, backup
}

// TestDeviceRestoredFromOwnBackup puts a device's folder back from a backup
// of its own, as a user restores a home folder: the backup is taken with
// the daemon stopped and changes queued while the spool was away (which
// the device sent after the backup), the device is then used (mail
// delivered, flags set, a message moved, one expunged, a mailbox made, a
// draft appended) while another device makes changes too, and the folder
// is put back. The restored device must show what the other device shows
// (same messages, UIDs, flags, mailboxes), hold no alarm, have landed each
// queued change once, and its mail client must see no UID it was shown
// name another message under the same UIDVALIDITY. The folder is then put
// back again with the spool away and the daemon started on it (the
// recipe's sync fails): once the spool answers, a mailbox that took an
// APPEND meanwhile at a UID the log gave another message has a new
// UIDVALIDITY, and the device converges.
func TestDeviceRestoredFromOwnBackup(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	s := newRestoreSetup(t, bin, python)
	a, b := s.newDevice(t, "a"), s.newDevice(t, "b")
	s.start(t, a)
	s.start(t, b)

	m := s.deliver(t, 4)
	s.synced(t, a)
	s.synced(t, b)
	s.imap(t, a, []string{"flag", "INBOX", m[0], `\Seen`})
	s.synced(t, a)

	// Changes queued while the spool is away, in the backup.
	root, backup := s.backupQueued(t, a, m[1])
	s.synced(t, a)

	// The device used after the backup, and the other device too.
	m = append(m, s.deliver(t, 2)...) // m[4], m[5]
	s.synced(t, a)
	s.imap(t, a, []string{"append", "INBOX", "draft after the backup"}, []string{"expunge", "INBOX", m[2]},
		[]string{"move", "INBOX", m[3], "Archive"}, []string{"create", "Projects"}, []string{"flag", "INBOX", m[4], `\Answered`})
	s.synced(t, b)
	s.imap(t, b, []string{"flag", "INBOX", m[5], `\Flagged`}, []string{"create", "FromB"})
	s.synced(t, a)
	s.synced(t, b)
	seenA := s.list(t, a)

	// Put the folder back.
	out := s.restoreDevice(t, a, root)
	if !strings.Contains(out, "Position:") || strings.Contains(out, "ALARM") {
		t.Errorf("cspool status after the restore printed\n%s", out)
	}
	s.synced(t, a)
	s.synced(t, b)

	viewA, viewB := s.list(t, a), s.list(t, b)
	if !reflect.DeepEqual(viewA, viewB) {
		ja, _ := json.Marshal(viewA)
		jb, _ := json.Marshal(viewB)
		t.Errorf("the restored device shows\n%s\nthe other device\n%s", ja, jb)
	}
	noUIDReused(t, "a", seenA, viewA)
	for _, subject := range []string{"queued draft", "draft after the backup"} {
		if n := countSubject(viewA, subject); n != 1 {
			t.Errorf("%q is on the restored device %d times, want once", subject, n)
		}
	}

	// Put it back again, this time with the spool away (the recipe's sync
	// fails) and the daemon started: the mail client sees the backup's
	// state until the spool answers.
	seenA = viewA
	s.server.stop(t, syscall.SIGTERM, 45*time.Second)
	a.stop(t)
	copyState(t, backup, a.stateDir())
	s.start(t, a)
	window := s.list(t, a)
	s.imap(t, a, []string{"append", "INBOX", "draft in the window"})
	window2 := s.list(t, a)
	jw, _ := json.Marshal(window)
	jw2, _ := json.Marshal(window2)
	t.Logf("before the spool answers:\n%s\nafter an APPEND:\n%s", jw, jw2)
	s.startServer(t)
	a.report(t, "nothing queued", func(r *statuspage.Report) bool { return r.Sync.Queued == 0 })
	s.synced(t, a)
	s.synced(t, b)
	viewA, viewB = s.list(t, a), s.list(t, b)
	// The draft's UID in the window was the log's for another message: the
	// mailbox has a new UIDVALIDITY on this device, so a client that saw
	// the window fetches it anew; its UIDs are the log's.
	if viewA["INBOX"].UIDValidity == window2["INBOX"].UIDValidity {
		t.Errorf("INBOX kept UIDVALIDITY %d after the log gave the window's draft's UID to another message", viewA["INBOX"].UIDValidity)
	}
	noUIDReused(t, "a (after the window)", window2, viewA)
	for box, mb := range viewB {
		if !reflect.DeepEqual(viewA[box].Messages, mb.Messages) {
			t.Errorf("%s: the restored device shows %v, the other device %v", box, viewA[box].Messages, mb.Messages)
		}
	}
	for _, subject := range []string{"queued draft", "draft after the backup", "draft in the window"} {
		if n := countSubject(viewA, subject); n != 1 {
			t.Errorf("%q is on the restored device %d times, want once", subject, n)
		}
	}
	a.stop(t)
	b.stop(t)
	if diff := mailstore.Diff(s.dumpOf(t, b.db), s.dumpOf(t, a.db), 5); diff != nil {
		t.Errorf("the restored device's state differs from the other device's: %v", diff)
	}
}

// copyFiles copies the files of d's database named by suffix (DB, DB-wal,
// DB-shm) into dir, as a plain file copy does while the daemon runs.
func copyFiles(t *testing.T, db, dir string, suffixes ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, sfx := range suffixes {
		b, err := os.ReadFile(db + sfx)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(db)+sfx), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeviceCopiedWhileRunning puts back copies of a device's database
// taken while its daemon ran: DB, DB-wal and DB-shm; DB alone; and DB with
// its WAL cut short in the middle of a frame (a copy torn by a write). Each
// must start and converge, or stop with a clear error.
func TestDeviceCopiedWhileRunning(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	s := newRestoreSetup(t, bin, python)
	a, b := s.newDevice(t, "a"), s.newDevice(t, "b")
	s.start(t, a)
	s.start(t, b)
	m := s.deliver(t, 3)
	s.synced(t, a)
	s.imap(t, a, []string{"flag", "INBOX", m[0], `\Seen`}, []string{"create", "Projects"})
	s.synced(t, a)
	whole, alone, torn := filepath.Join(s.dir, "whole"), filepath.Join(s.dir, "alone"), filepath.Join(s.dir, "torn")
	copyFiles(t, a.db, whole, "", "-wal", "-shm")
	copyFiles(t, a.db, alone, "")
	copyFiles(t, a.db, torn, "", "-wal")
	for _, dir := range []string{whole, alone, torn} {
		fi, err := os.Stat(filepath.Join(dir, "mail.db-wal"))
		if err == nil {
			t.Logf("%s: WAL of %d bytes", dir, fi.Size())
		}
	}
	if fi, err := os.Stat(filepath.Join(torn, "mail.db-wal")); err == nil && fi.Size() > 5000 {
		os.Truncate(filepath.Join(torn, "mail.db-wal"), fi.Size()-3000)
	}
	m = append(m, s.deliver(t, 2)...)
	s.synced(t, a)
	s.imap(t, a, []string{"flag", "INBOX", m[3], `\Flagged`}, []string{"move", "INBOX", m[1], "Projects"})
	s.synced(t, a)
	s.synced(t, b)
	for _, dir := range []string{whole, alone, torn} {
		func() {
			t.Logf("putting back %s", filepath.Base(dir))
			a.stop(t)
			for _, sfx := range []string{"", "-wal", "-shm"} {
				os.Remove(a.db + sfx)
			}
			for _, sfx := range []string{"", "-wal", "-shm"} {
				if bs, err := os.ReadFile(filepath.Join(dir, "mail.db"+sfx)); err == nil {
					if err := os.WriteFile(a.db+sfx, bs, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			s.start(t, a)
			s.synced(t, a)
			s.synced(t, b)
			va, vb := s.list(t, a), s.list(t, b)
			if !reflect.DeepEqual(va, vb) {
				ja, _ := json.Marshal(va)
				jb, _ := json.Marshal(vb)
				t.Errorf("%s: the restored device shows\n%s\nthe other device\n%s", filepath.Base(dir), ja, jb)
			}
		}()
	}
}

// TestDeviceRestoredAcrossCompaction puts back a device's folder whose
// backup holds changes queued while the spool was away, which the device
// sent after the backup, and which another device's checkpoint then let
// the spool compact away: the restored device, behind the compaction,
// rebuilds from the checkpoint, and must find its queued changes in it
// rather than send them again (each a replay on every device).
func TestDeviceRestoredAcrossCompaction(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	s := newRestoreSetup(t, bin, python)
	a, b := s.newDevice(t, "a"), s.newDevice(t, "b")
	b.extra = []string{"--checkpoint-min", "1"}
	s.start(t, a)
	s.start(t, b)
	m := s.deliver(t, 2)
	s.synced(t, a)
	s.synced(t, b)

	root, _ := s.backupQueued(t, a, m[0])
	a.report(t, "nothing queued", func(r *statuspage.Report) bool { return r.Sync.Queued == 0 })
	s.synced(t, a)
	sent := s.head(t)

	// More entries after the queued ones than a checkpoint keeps for a
	// device a few entries behind (docs/API.md §5), so that b's checkpoint
	// lets the spool delete the queued flag change.
	toggle(t, s, b, 1100)
	r := b.report(t, "a checkpoint after the queued changes", func(r *statuspage.Report) bool { return r.Checkpoint.Position > sent })
	t.Logf("b's checkpoint at %d, the queued changes sent up to %d", r.Checkpoint.Position, sent)
	s.synced(t, a)
	s.synced(t, b)

	if out := s.restoreDevice(t, a, root); !strings.Contains(out, "synced to position") || strings.Contains(out, "ALARM") {
		t.Errorf("the recipe printed\n%s", out)
	}
	a.report(t, "nothing queued", func(r *statuspage.Report) bool { return r.Sync.Queued == 0 })
	s.synced(t, a)
	s.synced(t, b)
	viewA, viewB := s.list(t, a), s.list(t, b)
	if !reflect.DeepEqual(viewA, viewB) {
		ja, _ := json.Marshal(viewA)
		jb, _ := json.Marshal(viewB)
		t.Errorf("the restored device shows\n%s\nthe other device\n%s", ja, jb)
	}
	if n := countSubject(viewA, "queued draft"); n != 1 {
		t.Errorf("the queued draft is there %d times, want once", n)
	}
}

// imaplibToggle is run by Python: it sets and clears \Flagged on the first
// message of INBOX, n times each.
const imaplibToggle = `
import imaplib, sys
host, port, user, password, n = sys.argv[1:6]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
M.select("INBOX")
for i in range(int(n)):
    for op in ("+FLAGS", "-FLAGS"):
        r = M.store("1", op, "(\\Flagged)")
        if r[0] != "OK":
            sys.exit("store: %r" % (r,))
M.logout()
print("DONE")
`

// toggle makes 2n flag changes on d, through imaplib.
func toggle(t *testing.T, s *restoreSetup, d *deviceDaemon, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.python, "-c", imaplibToggle, "127.0.0.1", fmt.Sprint(d.imapPort), "alice", d.password, fmt.Sprint(n)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "DONE") {
		t.Fatalf("imaplib toggling on %s: %v\n%s", d.name, err, out)
	}
}
