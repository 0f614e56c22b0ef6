package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool/sqlitestore"
)

// TestDaemonKilledWhileCheckpointing kills `cspool imap-server` with
// SIGKILL at random moments while it syncs a log and writes checkpoints
// (--checkpoint-min 1 makes it write one as soon as it is current), then
// requires: the device's database is whole (every message once), the spool
// holds a usable log (a new device rebuilds from it to the same state), and
// nothing was applied twice.
func TestDaemonKilledWhileCheckpointing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	user, spoolKey := mustKey(t), mustKey(t)
	writeUsersFile(t, filepath.Join(dir, "users"), map[string]*keys.SecretKey{"alice": user})
	for name, k := range map[string]*keys.SecretKey{"user": user, "spool": spoolKey} {
		if err := keys.WriteFiles(k, filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	spoolDir := filepath.Join(dir, "spool")
	srv := startServer(t, bin, "--spool-dir", spoolDir, "--users", filepath.Join(dir, "users"), "--spool-key", filepath.Join(dir, "spool.sec"))

	// Deliveries and churn go straight into the spool directory, as
	// `cspool deliver` does beside a running server.
	st, err := sqlitestore.Open(spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	const n = 300
	seal := func(c *command.Command, author *keys.SecretKey) []byte {
		b, _, err := entry.Seal(c, author, user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var batch [][]byte
	for i := 0; i < n; i++ {
		batch = append(batch, seal(&command.Command{Kind: command.Deliver, Date: int64(1764000000000 + i),
			Body: fmt.Appendf(nil, "Subject: m%d\r\nX-Token: tok-%d\r\n\r\nbody\r\n", i, i)}, spoolKey))
	}
	if _, err := st.Append(ctx, "alice", batch); err != nil {
		t.Fatal(err)
	}

	db := filepath.Join(dir, "device.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	daemon := func(db string, port int) *proc {
		return startProc(t, "imap-server", dir, append(os.Environ(), "USER=alice"), bin, "imap-server",
			"--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", "spool.pub",
			"--spool-server", srv.url, "--db", db, "--password", "pw", "--port", strconv.Itoa(port),
			"--status-addr", "", "--checkpoint-min", "1")
	}
	for round := 0; round < 6; round++ {
		// More churn each round, so there is always something to compact.
		var more [][]byte
		for j := 0; j < 160; j++ {
			more = append(more, seal(&command.Command{Kind: command.CreateMailbox, Mailbox: fmt.Sprintf("R%d/B%d", round, j)}, user))
		}
		if _, err := st.Append(ctx, "alice", more); err != nil {
			t.Fatal(err)
		}
		p := daemon(db, freePort(t))
		time.Sleep(time.Duration(50+rng.IntN(600)) * time.Millisecond)
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p.exited = true
	}
	// A last run to the end.
	p := daemon(db, freePort(t))
	p.waitOutput(t, "IMAP settings", 30*time.Second)
	head, _ := st.Head(ctx, "alice")
	waitPosition(t, db, head)
	p.stop(t, syscall.SIGTERM, 20*time.Second)

	cp, err := st.LatestCheckpoint(ctx, "alice")
	if err != nil {
		t.Fatalf("no checkpoint after the runs: %v", err)
	}
	t.Logf("checkpoint at %d of %d", cp.Pos, head)

	// A new device rebuilds from what the spool kept and agrees.
	fresh := filepath.Join(dir, "fresh.db")
	q := daemon(fresh, freePort(t))
	q.waitOutput(t, "IMAP settings", 30*time.Second)
	waitPosition(t, fresh, head)
	q.stop(t, syscall.SIGTERM, 20*time.Second)
	a, b := openDump(t, db), openDump(t, fresh)
	if d := mailstore.Diff(a, b, 10); d != nil {
		t.Fatalf("the killed device and a new one differ: %v", d)
	}
	inbox := 0
	for _, m := range a.Messages {
		if m.Mailbox == mailstore.InboxID() {
			inbox++
		}
	}
	if inbox != n {
		t.Fatalf("INBOX holds %d messages, want %d (once each)", inbox, n)
	}
}

// waitPosition waits until the mail store at db has applied pos.
func waitPosition(t *testing.T, db string, pos uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ms, err := openDeviceDB(db); err == nil {
			p, err := ms.Position(context.Background())
			ms.Close()
			if err == nil && p >= pos {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not reach position %d within 60 s", db, pos)
}

func openDump(t *testing.T, db string) *mailstore.State {
	t.Helper()
	ms, err := openDeviceDB(db)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	st, err := ms.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
