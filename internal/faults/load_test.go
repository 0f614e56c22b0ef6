package faults

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// ledger records what the clients sent and what they were told.
type ledger struct {
	mu       sync.Mutex
	sent     map[string]bool // every token offered over LMTP
	acked    map[string]bool // tokens that got 250
	lmtpErrs map[string]int  // failure class -> count
	imapOK   int
	imapErrs map[string]int
	retries  int // deliveries sent again after a failure, as an MTA does
}

func newLedger() *ledger {
	return &ledger{sent: map[string]bool{}, acked: map[string]bool{}, lmtpErrs: map[string]int{}, imapErrs: map[string]int{}}
}

func (l *ledger) note(m map[string]int, class string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m[class]++
}

func (l *ledger) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("LMTP %d sent, %d acknowledged, failures %v; IMAP %d OK, failures %v",
		len(l.sent), len(l.acked), sorted(l.lmtpErrs), l.imapOK, sorted(l.imapErrs))
}

func sorted(m map[string]int) string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(s)
	return "{" + strings.Join(s, " ") + "}"
}

// checkErrors fails the test for any failure outside the allowed classes.
func (l *ledger) checkErrors(t *testing.T, lmtpAllowed, imapAllowed []string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for class, n := range l.lmtpErrs {
		if !allowed(class, lmtpAllowed) {
			t.Errorf("LMTP failure %q seen %d times; allowed: %v", class, n, lmtpAllowed)
		}
	}
	for class, n := range l.imapErrs {
		if !allowed(class, imapAllowed) {
			t.Errorf("IMAP failure %q seen %d times; allowed: %v", class, n, imapAllowed)
		}
	}
}

func allowed(class string, list []string) bool {
	for _, a := range list {
		if strings.HasPrefix(class, a) {
			return true
		}
	}
	return false
}

// load runs LMTP deliveries and IMAP mutations until stopped.
type load struct {
	stopc chan struct{}
	wg    sync.WaitGroup
}

func (ld *load) stopped() bool {
	select {
	case <-ld.stopc:
		return true
	default:
		return false
	}
}

// stop ends the load and waits for its workers.
func (ld *load) stop() {
	close(ld.stopc)
	ld.wg.Wait()
}

// loadOptions bounds a load.
type loadOptions struct {
	maxMessages int           // LMTP deliveries in all
	bodyBytes   int           // filler per message
	pace        time.Duration // pause between deliveries
	mutators    bool          // run one IMAP mutation worker per device
}

func startLoad(t *testing.T, c *cluster, l *ledger, o loadOptions) *load {
	ld := &load{stopc: make(chan struct{})}
	if o.mutators {
		// The folder the mutators copy into exists before any delivery,
		// so a device whose disk the deliveries fill has it already.
		createCopies(t, c)
	}
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		deliverLoop(ld, c.lmtpAddr(), l, o)
	}()
	if o.mutators {
		for i, d := range c.devices {
			ld.wg.Add(1)
			go func() {
				defer ld.wg.Done()
				mutateLoop(ld, d, l, uint64(i+1))
			}()
		}
	}
	return ld
}

// message is a delivery carrying a unique token.
func message(token string, fill int) string {
	return fmt.Sprintf("From: load@example.net\r\nTo: %s@example.org\r\nSubject: fault load %s\r\nX-Fault-Token: %s\r\n\r\n%s\r\n",
		userName, token, token, strings.Repeat(fmt.Sprintf("%s %x\r\n", token, rand.Uint64()), fill/40+1))
}

// deliverLoop sends messages with tokens t00000, t00001, ... one at a time,
// reconnecting after any failure.
func deliverLoop(ld *load, addr string, l *ledger, o loadOptions) {
	var lc *smtp.Client
	var conn net.Conn
	defer func() {
		if lc != nil {
			lc.Close()
		}
	}()
	for i := 0; i < o.maxMessages && !ld.stopped(); i++ {
		token := fmt.Sprintf("t%05d", i)
		if lc == nil {
			var err error
			conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				l.note(l.lmtpErrs, "conn: connect: "+errClass(err))
				time.Sleep(50 * time.Millisecond)
				continue
			}
			lc = smtp.NewClientLMTP(conn)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		l.mu.Lock()
		l.sent[token] = true
		l.mu.Unlock()
		if err := sendOne(lc, token, o.bodyBytes); err != nil {
			l.note(l.lmtpErrs, lmtpClass(err))
			lc.Close()
			lc = nil
			time.Sleep(20 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		l.acked[token] = true
		l.mu.Unlock()
		if o.pace > 0 {
			time.Sleep(o.pace)
		}
	}
}

func sendOne(lc *smtp.Client, token string, fill int) error {
	if err := lc.Mail("load@example.net", nil); err != nil {
		return err
	}
	if err := lc.Rcpt(userName+"@example.org", nil); err != nil {
		return err
	}
	w, err := lc.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(message(token, fill))); err != nil {
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

// lmtpClass is "451", "452", ... for a reply, else a connection failure.
func lmtpClass(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprint(se.Code)
	}
	return "conn: " + errClass(err)
}

func errClass(err error) string {
	s := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "broken pipe", "EOF", "timeout"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	return s
}

// imapClass is "NO [CODE]" or "BAD [CODE]" for a reply, else a connection
// failure.
func imapClass(err error) string {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return fmt.Sprintf("%s [%s]", ie.Type, ie.Code)
	}
	return "conn: " + errClass(err)
}

// dialIMAP logs in to a device. Every read and write of the connection is
// bounded by a deadline renewed before each command.
func dialIMAP(addr string) (*imapclient.Client, net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := imapclient.New(conn, nil)
	if err := c.Login(userName, password).Wait(); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, conn, nil
}

// mutateLoop runs STORE, COPY, MOVE and EXPUNGE on one device: flags in
// INBOX and Archive; COPY from INBOX to Copies (whose messages are then
// expunged); MOVE between INBOX and Archive. So every delivered message
// stays in INBOX or Archive, exactly once.
func mutateLoop(ld *load, d *device, l *ledger, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 42))
	var c *imapclient.Client
	var conn net.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := 0; i < 100000 && !ld.stopped(); i++ {
		if c == nil {
			var err error
			if c, conn, err = dialIMAP(d.addr()); err != nil {
				l.note(l.imapErrs, imapClass(err))
				c = nil
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		sel, err := mutateOnce(c, r)
		switch {
		case err == nil:
			l.mu.Lock()
			l.imapOK++
			l.mu.Unlock()
		case isReply(err):
			class := imapClass(err)
			var lost error
			if isCode(err, imap.ResponseCodeNonExistent) && sel.uidValidity != 0 {
				// The mailbox was there when selected: learn why it went.
				class, lost = nonExistentClass(c, sel, class)
			}
			l.note(l.imapErrs, class)
			if lost != nil {
				l.note(l.imapErrs, imapClass(lost))
				c.Close()
				c = nil
				time.Sleep(50 * time.Millisecond)
				break
			}
			time.Sleep(20 * time.Millisecond)
		default:
			l.note(l.imapErrs, imapClass(err))
			c.Close()
			c = nil
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
	}
}

func isReply(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie)
}

// selection is the mailbox a mutation selected and the UIDVALIDITY the
// SELECT gave it (0: the SELECT failed).
type selection struct {
	box         string
	uidValidity uint32
}

// mutateOnce selects a mailbox and changes it, reporting what it selected.
func mutateOnce(c *imapclient.Client, r *rand.Rand) (selection, error) {
	box := "INBOX"
	op := r.IntN(10)
	switch {
	case op == 9:
		box = "Copies"
	case op >= 7:
		box = "Archive"
	}
	sel, err := c.Select(box, nil).Wait()
	if err != nil {
		return selection{box: box}, err
	}
	return selection{box, sel.UIDValidity}, mutateSelected(c, r, box, op, sel.NumMessages)
}

// mutateSelected runs operation op on the n messages of the selected box.
func mutateSelected(c *imapclient.Client, r *rand.Rand, box string, op int, n uint32) error {
	if n == 0 {
		return nil
	}
	one := imap.SeqSetNum(uint32(r.IntN(int(n))) + 1)
	switch {
	case box == "Copies":
		if err := c.Store(seqRange(1, n), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			return err
		}
		return c.Expunge().Close()
	case op < 3:
		fl := []imap.Flag{imap.FlagFlagged, imap.FlagSeen, "$Fault"}[r.IntN(3)]
		kind := []imap.StoreFlagsOp{imap.StoreFlagsAdd, imap.StoreFlagsDel}[r.IntN(2)]
		return c.Store(one, &imap.StoreFlags{Op: kind, Silent: true, Flags: []imap.Flag{fl}}, nil).Close()
	case op < 5:
		_, err := c.Copy(one, "Copies").Wait()
		return err
	case op < 7:
		_, err := c.Move(one, "Archive").Wait()
		return err
	case op == 7:
		_, err := c.Move(one, "INBOX").Wait()
		return err
	default:
		return c.Store(one, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagAnswered}}, nil).Close()
	}
}

// imapRenumbered is the failure class of a NO [NONEXISTENT] for a command
// on a mailbox that the device gave a new UIDVALIDITY while it was
// selected (docs/IMAP.md, "Offline", UIDs): a change queued while the
// spool could not be reached took UIDs the log then gave to other
// messages, so the mailbox is, for the sessions that had it selected,
// deleted. Only the spool's faults (the device queueing) allow it.
const imapRenumbered = "NO [NONEXISTENT] new UIDVALIDITY"

// nonExistentClass selects mailbox sel again after a command in it was
// answered NO [NONEXISTENT] (of failure class class), the SELECT before
// having found it. The NO is the documented one, imapRenumbered, only if
// the mailbox is there again with a UIDVALIDITY above the session's and
// of the range the device gives its own (2^31 up); otherwise the class
// stays. lost is the SELECT's failure when the connection failed.
func nonExistentClass(c *imapclient.Client, sel selection, class string) (_ string, lost error) {
	now, err := c.Select(sel.box, nil).Wait()
	switch {
	case err != nil && !isReply(err):
		return class, err
	case err == nil && renumbered(sel.uidValidity, now.UIDValidity):
		return imapRenumbered, nil
	}
	return class, nil
}

// renumbered reports whether UIDVALIDITY now is one the device gave a
// mailbox it had shown as was: greater, and of the device's own range.
func renumbered(was, now uint32) bool {
	return now > was && now >= 1<<31
}

func isCode(err error, code imap.ResponseCode) bool {
	var ie *imap.Error
	return errors.As(err, &ie) && ie.Code == code
}

// seqRange is the sequence set lo:hi.
func seqRange(lo, hi uint32) imap.SeqSet {
	var s imap.SeqSet
	s.AddRange(lo, hi)
	return s
}

// createCopies creates the Copies mailbox through device a, once, before
// the mutators start (two devices creating it at once would leave a
// rejected entry in the log, which verify counts as a failure).
func createCopies(t *testing.T, c *cluster) {
	t.Helper()
	cl, _, err := dialIMAP(c.devices[0].addr())
	if err != nil {
		t.Fatalf("logging in to device a: %v", err)
	}
	defer cl.Close()
	if err := cl.Create("Copies", nil).Wait(); err != nil && !isCode(err, imap.ResponseCodeAlreadyExists) {
		t.Fatalf("creating Copies: %v", err)
	}
	// Every device must know the folder before the load copies into it;
	// otherwise a COPY on a device that has not synced the CREATE yet gets
	// a (correct) NO [NONEXISTENT].
	for _, d := range c.devices[1:] {
		cb, _, err := dialIMAP(d.addr())
		if err != nil {
			t.Fatalf("logging in to device %s: %v", d.name, err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := cb.Status("Copies", &imap.StatusOptions{NumMessages: true}).Wait(); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("device %s did not see the Copies folder within 20 s", d.name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cb.Close()
	}
}
