package faults

import (
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/spool/pgstore/pgtest"
)

// TestSpoolUnreachable: the server is stopped for 3 s under load. LMTP
// connections are refused; IMAP mutations are answered OK and wait on the
// device (docs/IMAP.md, "Offline"), reads keep working on both devices,
// and once the server is back every change lands once and both converge.
func TestSpoolUnreachable(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	l := newLedger()
	ld := startLoad(t, c, l, loadOptions{maxMessages: 3000, pace: 5 * time.Millisecond, mutators: true})
	time.Sleep(time.Second)
	c.server.stop(t)
	downSince := time.Now()
	if conn, err := net.DialTimeout("tcp", c.lmtpAddr(), time.Second); err == nil {
		conn.Close()
		t.Error("the LMTP port accepts connections while the server is stopped")
	}
	for _, d := range c.devices {
		cl, conn, err := dialIMAP(d.addr())
		if err != nil {
			t.Fatalf("device %s: login while the spool is down: %v", d.name, err)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		// The mutators go on while the spool is down, their changes
		// queued on the device (and quick): the mail may be in INBOX or
		// in Archive by now.
		var sel *imap.SelectData
		for _, box := range []string{"INBOX", "Archive"} {
			if sel, err = cl.Select(box, nil).Wait(); err != nil || sel.NumMessages > 0 {
				break
			}
		}
		if err != nil || sel.NumMessages == 0 {
			t.Fatalf("device %s: SELECT INBOX and Archive while the spool is down: %v (%v messages), want OK with the mail", d.name, err, sel)
		}
		// A mutator's MOVE on another session may take a message out of
		// the mailbox between the SELECT and the FETCH, which then answers
		// for the others (docs/IMAP.md, "Known limits": a FETCH leaves out what
		// was expunged since the command began; the EXPUNGE follows).
		msgs, err := cl.Fetch(seqRange(1, sel.NumMessages), &imap.FetchOptions{Flags: true, Envelope: true}).Collect()
		if err != nil || len(msgs) == 0 || len(msgs) > int(sel.NumMessages) || len(msgs) < int(sel.NumMessages)-2 {
			t.Errorf("device %s: FETCH while the spool is down: %d messages, %v; want %d (at most two fewer, moved meanwhile)", d.name, len(msgs), err, sel.NumMessages)
		}
		if _, err := cl.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "X-Fault-Token", Value: "t0"}}}, nil).Wait(); err != nil {
			t.Errorf("device %s: SEARCH while the spool is down: %v", d.name, err)
		}
		err = cl.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
		if err != nil {
			t.Errorf("device %s: STORE while the spool is down: %v, want OK (queued on the device)", d.name, err)
		}
		cl.Close()
	}
	time.Sleep(3*time.Second - time.Since(downSince))
	c.startServer()
	time.Sleep(time.Second)
	ld.stop()
	t.Log(l.summary())
	l.checkErrors(t, lmtpTemporary, joinLists(imapTemporary, imapRaces, imapOffline))
	verify(t, c, l)
}

// TestKillPostgres: the PostgreSQL cluster under a --store postgres server
// is stopped with -m immediate (no shutdown checkpoint, the closest to kill
// -9) twice under load, and started again.
func TestKillPostgres(t *testing.T) {
	t.Parallel()
	binary(t)
	pg := pgtest.PrivateCluster(t)
	c := newCluster(t, clusterOptions{store: []string{"--store", "postgres", "--dsn", pg.DSN()}})
	l := newLedger()
	ld := startLoad(t, c, l, loadOptions{maxMessages: 3000, pace: 5 * time.Millisecond, mutators: true})
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 2; i++ {
		pause(r, 500*time.Millisecond, 1500*time.Millisecond)
		pg.Crash()
		pause(r, time.Second, 2*time.Second)
		pg.Start()
	}
	time.Sleep(2 * time.Second)
	ld.stop()
	t.Log(l.summary())
	l.checkErrors(t, lmtpTemporary, joinLists(imapTemporary, imapRaces, imapOffline))
	if c.server.exited() {
		t.Fatalf("the server exited while PostgreSQL was down: %v", c.server.err)
	}
	verify(t, c, l)
}

// fill writes a file of zeros into dir until the file system is full, then
// frees keep bytes of it.
func fill(t *testing.T, path string, keep int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			break
		}
	}
	if err := f.Truncate(max(n-keep, 0)); err != nil {
		t.Fatal(err)
	}
	f.Close()
}
