package faults

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// Kills one step off the paths of kill_test.go: a server killed while
// an MTA sends again what got no answer, a new device killed while it
// rebuilds from a checkpoint, a daemon killed inside IMAP commands that
// change hundreds of messages at once.

// TestKillServerRetriedDeliveries: kill -9 of the spool server under a
// load that behaves as an MTA does, sending each message again, byte for
// byte, until it gets a 250. A delivery committed whose answer the kill
// lost is then in the log twice; every message must show once on every
// device (docs/DELIVERY.md, "Retried deliveries").
func TestKillServerRetriedDeliveries(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	l := newLedger()
	ld := startLoad(t, c, l, loadOptions{mutators: true})
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		retryLoop(ld, c.lmtpAddr(), l, 3000)
	}()
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 6; i++ {
		pause(r, 200*time.Millisecond, 1000*time.Millisecond)
		c.server.kill()
		pause(r, 50*time.Millisecond, 300*time.Millisecond)
		c.startServer()
	}
	time.Sleep(time.Second)
	ld.stop()
	t.Logf("%s; %d deliveries sent again", l.summary(), l.retries)
	l.checkErrors(t, lmtpTemporary, joinLists(imapTemporary, imapRaces, imapOffline))
	verify(t, c, l)
}

// retryLoop delivers up to n messages, each with a Message-ID and the same
// bytes at every try, sent again after any failure (at most 200 times)
// until it is acknowledged.
func retryLoop(ld *load, addr string, l *ledger, n int) {
	var lc *smtp.Client
	defer func() {
		if lc != nil {
			lc.Close()
		}
	}()
	for i := 0; i < n && !ld.stopped(); i++ {
		tok := fmt.Sprintf("r%05d", i)
		msg := fmt.Sprintf("From: mta@example.net\r\nTo: %s@example.org\r\nMessage-ID: <%s@example.net>\r\nSubject: retried %s\r\nX-Fault-Token: %s\r\n\r\n%s",
			userName, tok, tok, tok, strings.Repeat(tok+" body line\r\n", 40))
		l.mu.Lock()
		l.sent[tok] = true
		l.mu.Unlock()
		for try := 0; try < 200 && !ld.stopped(); try++ {
			if lc == nil {
				conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				lc = smtp.NewClientLMTP(conn)
			}
			if try > 0 {
				l.mu.Lock()
				l.retries++
				l.mu.Unlock()
			}
			err := sendBytes(lc, msg)
			if err == nil {
				l.mu.Lock()
				l.acked[tok] = true
				l.mu.Unlock()
				break
			}
			l.note(l.lmtpErrs, lmtpClass(err))
			lc.Close()
			lc = nil
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// sendBytes delivers msg to the user in one LMTP transaction.
func sendBytes(lc *smtp.Client, msg string) error {
	if err := lc.Mail("mta@example.net", nil); err != nil {
		return err
	}
	if err := lc.Rcpt(userName+"@example.org", nil); err != nil {
		return err
	}
	w, err := lc.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	_, err = w.CloseWithLMTPResponse()
	var le smtp.LMTPDataError
	if errors.As(err, &le) {
		for _, e := range le {
			return e
		}
	}
	return err
}

// TestKillDaemonDuringRestore: a new device rebuilds from a checkpoint
// (1,800 messages delivered, 500 expunged, 100 moved; device a writes one
// as soon as it may) and is killed with SIGKILL at random moments of its
// start and its restore (from a quarter of the time a first new device
// took to log its rebuild to all of it),
// started again on the database the kill left, 16 times; every other
// round the database is copied while the daemon is stopped (SIGSTOP)
// without its -shm file, as a machine that lost power leaves it, and
// the daemon started on the copy. Once the restore finishes a round, the
// next starts a new device again. At the end the device converges with
// the others, nothing rejected, no alarm.
func TestKillDaemonDuringRestore(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	createCopies(t, c)
	a := c.devices[0]
	a.p.stop(t)
	a.extra = []string{"--checkpoint-min", "1"}
	c.startDevice(a)
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		var toks []string
		for i := 0; i < 300; i++ {
			toks = append(toks, fmt.Sprintf("m%d-%03d", w, i))
		}
		wg.Add(1)
		go func() { defer wg.Done(); deliverTokens(t, c, toks...) }()
	}
	wg.Wait()
	c.waitConverged(90 * time.Second)
	// Deleted mail, so that entries outnumber the live messages and a
	// checkpoint is written.
	cl := login(t, a)
	_, err := cl.Select("INBOX", nil).Wait()
	mustOK(t, "SELECT", err)
	mustOK(t, "STORE", cl.Store(seqRange(1, 500), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	mustOK(t, "EXPUNGE", cl.Expunge().Close())
	_, err = cl.Move(seqRange(1, 100), "Archive").Wait()
	mustOK(t, "MOVE", err)
	cl.Close()
	waitLog(t, a, "checkpoint stored", 60*time.Second)
	l := newLedger()
	for w := 0; w < 6; w++ {
		for i := 0; i < 300; i++ {
			l.sent[fmt.Sprintf("m%d-%03d", w, i)] = true
		}
	}
	for _, box := range []string{"INBOX", "Archive"} {
		for tok := range tokens(t, a, box) {
			l.acked[tok] = true
		}
	}

	n := &device{name: "c", db: filepath.Join(c.dir, "c.db"), port: freePort(t)}
	// How long a start and restore take here, on a device of its own.
	start := time.Now()
	c.launchDevice(n)
	waitLog(t, n, "rebuilt from checkpoint", 60*time.Second)
	took := time.Since(start)
	n.p.kill()
	r := rand.New(rand.NewPCG(7, 8))
	killed, restored := 0, 0
	for round := 1; round <= 16; round++ {
		if strings.Contains(n.p.stderr.String(), "rebuilt from checkpoint") {
			restored++
			n.db = filepath.Join(c.dir, fmt.Sprintf("c%d.db", round))
		}
		c.launchDevice(n)
		pause(r, took/4, took)
		if round%2 == 1 {
			stopped := n.p.cmd.Process.Signal(syscall.SIGSTOP) == nil
			cp := filepath.Join(c.dir, fmt.Sprintf("c%d-cut.db", round))
			copyFile(t, n.db, cp)
			copyFile(t, n.db+"-wal", cp+"-wal")
			n.p.kill()
			if stopped {
				n.db = cp
			}
		} else {
			n.p.kill()
		}
		if !strings.Contains(n.p.stderr.String(), "rebuilt from checkpoint") {
			killed++
		}
	}
	t.Logf("a start and restore took %v; 16 rounds: %d killed before the restore had finished, %d restores finished", took, killed, restored)
	c.startDevice(n)
	c.devices = append(c.devices, n)
	verify(t, c, l)
}

// waitLog waits until a daemon has logged want.
func waitLog(t *testing.T, d *device, want string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !strings.Contains(d.p.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("device %s did not log %q within %v", d.name, want, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyFile copies from to to, if from exists.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if os.IsNotExist(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestKillDaemonDuringBulkCommands: IMAP commands on device a that each
// change hundreds of messages (MOVE of a whole mailbox, COPY of INBOX,
// STORE and EXPUNGE of a folder, 40 APPENDs in a row), the daemon killed
// with SIGKILL at a random moment of each, 30 rounds. Every delivered
// message stays once in INBOX or Archive, every APPEND answered OK is
// there once, and both devices converge with nothing rejected.
func TestKillDaemonDuringBulkCommands(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	a := c.devices[0]
	createCopies(t, c)
	l := newLedger()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		var toks []string
		for i := 0; i < 200; i++ {
			tok := fmt.Sprintf("m%d-%03d", w, i)
			toks = append(toks, tok)
			l.sent[tok], l.acked[tok] = true, true
		}
		wg.Add(1)
		go func() { defer wg.Done(); deliverTokens(t, c, toks...) }()
	}
	wg.Wait()
	c.waitConverged(90 * time.Second)
	r := rand.New(rand.NewPCG(9, 10))
	during := 0
	for round := 0; round < 30; round++ {
		cl, conn, err := dialIMAP(a.addr())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		done := make(chan error, 1)
		go func() { done <- bulkCommand(cl, round, l) }()
		delay := time.Duration(r.IntN(800)) * time.Millisecond
		select {
		case err := <-done:
			a.p.kill()
			if err != nil {
				t.Errorf("round %d: %v", round, err)
			}
		case <-time.After(delay):
			a.p.kill()
			<-done
			during++
		}
		cl.Close()
		c.startDevice(a)
	}
	t.Logf("30 rounds, %d killed inside the command", during)
	verify(t, c, l)
}

// bulkCommand runs round's command on a logged-in client; APPENDs
// answered OK go into l as acknowledged.
func bulkCommand(cl *imapclient.Client, round int, l *ledger) error {
	selectAll := func(box string) (uint32, error) {
		sel, err := cl.Select(box, nil).Wait()
		if err != nil {
			return 0, err
		}
		return sel.NumMessages, nil
	}
	switch round % 5 {
	case 0, 1:
		from, to := "INBOX", "Archive"
		if round%2 == 1 {
			from, to = to, from
		}
		n, err := selectAll(from)
		if err != nil || n == 0 {
			return err
		}
		_, err = cl.Move(seqRange(1, n), to).Wait()
		return err
	case 2:
		n, err := selectAll("INBOX")
		if err != nil || n == 0 {
			return err
		}
		_, err = cl.Copy(seqRange(1, n), "Copies").Wait()
		return err
	case 3:
		n, err := selectAll("Copies")
		if err != nil || n == 0 {
			return err
		}
		if err := cl.Store(seqRange(1, n), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			return err
		}
		return cl.Expunge().Close()
	default:
		for i := 0; i < 40; i++ {
			tok := fmt.Sprintf("ap%02d-%02d", round, i)
			msg := message(tok, 100)
			l.mu.Lock()
			l.sent[tok] = true
			l.mu.Unlock()
			ac := cl.Append("Archive", int64(len(msg)), nil)
			ac.Write([]byte(msg))
			ac.Close()
			if _, err := ac.Wait(); err != nil {
				return err
			}
			l.mu.Lock()
			l.acked[tok] = true
			l.mu.Unlock()
		}
		return nil
	}
}
