package deliver

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/entry"
	"cspool/internal/smtpdata/smtpdatatest"
)

func dialLMTP(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("mta.test"); err != nil {
		t.Fatalf("LHLO: %v", err)
	}
	return c
}

// sendGo sends msg to rcpts with go-smtp's LMTP client and returns the
// per-recipient replies of DATA (nil for 250). RCPT failures are returned
// in rcptErrs and those recipients are left out of DATA.
func sendGo(t *testing.T, c *smtp.Client, msg []byte, rcpts ...string) (rcptErrs, dataErrs map[string]*smtp.SMTPError) {
	t.Helper()
	rcptErrs, dataErrs = map[string]*smtp.SMTPError{}, map[string]*smtp.SMTPError{}
	if err := c.Mail("sender@example.net", nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	accepted := 0
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Fatalf("RCPT %s: %v", r, err)
			}
			rcptErrs[r] = se
			continue
		}
		accepted++
	}
	if accepted == 0 {
		if err := c.Reset(); err != nil {
			t.Fatalf("RSET: %v", err)
		}
		return rcptErrs, dataErrs
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatalf("writing message: %v", err)
	}
	_, err = w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	if errors.As(err, &lerr) {
		for r, se := range lerr {
			dataErrs[r] = se
		}
	} else if err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	return rcptErrs, dataErrs
}

func TestLMTPGoClientMessages(t *testing.T) {
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{})
	c := dialLMTP(t, addr)
	// go-smtp's writer turns bare LF into CRLF, so these are CRLF-only;
	// TestLMTPScriptedBytes covers bare LF over the wire.
	msgs := [][]byte{
		[]byte("Subject: one\r\n\r\nhello\r\n"),
		[]byte("Subject: nul\r\n\r\na\x00b\r\n"),
		[]byte("Subject: caf\xc3\xa9\r\n\r\n\xff\x80\xe9\r\n"),
		[]byte("no header at all\r\n.leading dot\r\n..two\r\n"),
	}
	for _, m := range msgs {
		rcptErrs, dataErrs := sendGo(t, c, m, "alice@example.org")
		if len(rcptErrs)+len(dataErrs) > 0 {
			t.Fatalf("delivering %s: RCPT %v, DATA %v", short(m), rcptErrs, dataErrs)
		}
	}
	got := f.bodies(t, "alice")
	if len(got) != len(msgs) {
		t.Fatalf("log has %d entries, want %d", len(got), len(msgs))
	}
	for i := range msgs {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Errorf("message %d stored as %s, want %s", i, short(got[i]), short(msgs[i]))
		}
	}
}

func TestLMTPThreeRecipients(t *testing.T) {
	f := newFixture(t, "alice", "bob", "carol")
	addr := serve(t, f.d, LMTPOptions{})
	c := dialLMTP(t, addr)
	msg := []byte("Subject: to three\r\n\r\nshared body\r\n")
	rcptErrs, dataErrs := sendGo(t, c, msg, "alice@example.org", "bob@example.org", "nobody@example.org", "carol@example.org")
	if se := rcptErrs["nobody@example.org"]; se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Errorf("RCPT of an unknown user: %v, want 550 5.1.1", se)
	}
	if len(rcptErrs) != 1 || len(dataErrs) != 0 {
		t.Fatalf("RCPT errors %v, DATA errors %v; want only the unknown user refused", rcptErrs, dataErrs)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		got := f.bodies(t, u)
		if len(got) != 1 || !bytes.Equal(got[0], msg) {
			t.Fatalf("log of %s: %d entries (%v), want the message once", u, len(got), got)
		}
	}
	// Each entry opens only with its own user's key.
	for _, owner := range []string{"alice", "bob", "carol"} {
		es, err := f.store.Read(testCtx(t), owner, 0, 10, 1<<20)
		if err != nil || len(es) != 1 {
			t.Fatalf("reading %s: %d entries, %v", owner, len(es), err)
		}
		for _, other := range []string{"alice", "bob", "carol"} {
			if other == owner {
				continue
			}
			if _, err := entry.Open(es[0].Data, f.userKeys[other], owner, f.spoolKey.Public()); err == nil {
				t.Errorf("entry of %s opened with the key of %s", owner, other)
			}
		}
	}
	if h, _ := f.store.Head(testCtx(t), "nobody"); h != 0 {
		t.Errorf("unknown user's log has head %d, want 0", h)
	}
}

// TestLMTPScriptedBytes writes the protocol by hand, so the bytes on the wire
// are exactly the test's: bare LF, lone CR, NUL and 8-bit data must come
// back as sent after dot-unstuffing.
func TestLMTPScriptedBytes(t *testing.T) {
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	var want [][]byte
	for _, m := range oddMessages {
		s.cmd("MAIL FROM:<sender@example.net>", "250 ")
		s.cmd("RCPT TO:<alice@example.org>", "250 ")
		s.cmd("DATA", "354 ")
		s.write(smtpdatatest.DotStuff(m.msg))
		s.expect("250 2.0.0 <alice@example.org> delivered")
		w := m.msg
		if !bytes.HasSuffix(w, []byte("\r\n")) {
			w = append(append([]byte{}, w...), "\r\n"...)
		}
		want = append(want, w)
	}
	got := f.bodies(t, "alice")
	if len(got) != len(want) {
		t.Fatalf("log has %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("%s: stored %s, want %s", oddMessages[i].name, short(got[i]), short(want[i]))
		}
	}
}

// TestLMTPDialogue runs scripted sessions: each step is a line sent and the
// reply expected.
func TestLMTPDialogue(t *testing.T) {
	type step struct{ send, want string }
	cases := []struct {
		name  string
		opts  LMTPOptions
		steps []step
		logs  map[string]int // entries expected per user afterwards
		// users are the directory's users (alice and bob if none);
		// folded makes it find users by folded names, as userdb.DB does.
		users  []string
		folded bool
	}{
		{
			name: "garbage then delivery",
			steps: []step{
				{"HELO x", "500 5.5.1"},
				{"EHLO x", "500 5.5.1"},
				{"LHLO mta.test", "250 "},
				{"FROBNICATE", "50"},
				{"\x00\xff\x01", "50"},
				{"RCPT TO:<alice@example.org>", "502 5.5.1"},
				{"MAIL FROM:<s@example.net>", "250 "},
				{"RCPT alice", "501 5.5.2"},
				{"RCPT TO:<alice@example.org> FOO=BAR", "500 5.5.4"},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"DATA\r\nSubject: x\r\n\r\nbody\r\n.", "354 "},
				{"", "250 2.0.0 <alice@example.org>"},
				{"NOOP", "250 "},
			},
			logs: map[string]int{"alice": 1},
		},
		{
			name: "unknown users and domains",
			opts: LMTPOptions{Domains: []string{"example.org"}},
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<>", "250 "},
				{"RCPT TO:<nobody@example.org>", "550 5.1.1"},
				{"RCPT TO:<alice@elsewhere.test>", "550 5.1.2"},
				{"RCPT TO:<\"a b\"@example.org>", "550 5.1.1"},
				{"RCPT TO:<alice@EXAMPLE.org>", "250 "},
				{"RCPT TO:<ALICE@example.org>", "250 "},
				// Case is folded in ASCII only: U+0130 and the Kelvin
				// sign were folded onto i and k (a look-alike of
				// alice@ reached alice past a policy keyed on it).
				{"RCPT TO:<AL\u0130CE@example.org>", "550 5.1.1"},
				{"RCPT TO:<bob@example.org>", "250 "},
				{"DATA\r\nhi\r\n.", "354 "},
				{"", "250 2.0.0 <alice@EXAMPLE.org>"},
				{"", "250 2.0.0 <ALICE@example.org>"},
				{"", "250 2.0.0 <bob@example.org>"},
			},
			logs: map[string]int{"alice": 1, "bob": 1},
		},
		{
			name: "recipient delimiter and duplicates",
			opts: LMTPOptions{RecipientDelimiter: "+"},
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<s@example.net>", "250 "},
				{"RCPT TO:<alice+lists@example.org>", "250 "},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"RCPT TO:<nobody+x@example.org>", "550 5.1.1"},
				{"DATA\r\nhi\r\n.", "354 "},
				{"", "250 2.0.0 <alice+lists@example.org>"},
				{"", "250 2.0.0 <alice@example.org>"},
				{"", "250 2.0.0 <alice@example.org>"},
			},
			logs: map[string]int{"alice": 1},
		},
		{
			// Each character of the delimiter separates, as in
			// Postfix's recipient_delimiter; the first counts.
			name: "a delimiter of several characters",
			opts: LMTPOptions{RecipientDelimiter: "+-"},
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<s@example.net>", "250 "},
				{"RCPT TO:<alice-lists@example.org>", "250 "},
				{"RCPT TO:<bob+x-y@example.org>", "250 "},
				{"DATA\r\nhi\r\n.", "354 "},
				{"", "250 2.0.0 <alice-lists@example.org>"},
				{"", "250 2.0.0 <bob+x-y@example.org>"},
			},
			logs: map[string]int{"alice": 1, "bob": 1},
		},
		{
			name: "size limits",
			opts: LMTPOptions{MaxMessageBytes: 10},
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<s@example.net> SIZE=11", "552 5.3.4"},
				{"MAIL FROM:<s@example.net> SIZE=10", "250 "},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"RCPT TO:<bob@example.org>", "250 "},
				{"DATA\r\n0123456789abcdef\r\n.", "354 "},
				{"", "552 5.3.4 <alice@example.org>"},
				{"", "552 5.3.4 <bob@example.org>"},
				{"MAIL FROM:<s@example.net>", "250 "},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"DATA\r\n01234567\r\n.", "354 "}, // exactly 10 bytes with CRLF
				{"", "250 2.0.0 <alice@example.org>"},
			},
			logs: map[string]int{"alice": 1, "bob": 0},
		},
		{
			// Control characters in a path (RFC 5321 section 4.1.2
			// allows none): refused. Without --lmtp-domains the
			// address was taken, and echoed raw in the replies.
			name: "control characters in addresses",
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<s@example.net>", "250 "},
				{"RCPT TO:<alice@exa\rmple.org>", "501 5.1.3"},
				{"RCPT TO:<alice@example.org\x1b[2J>", "501 5.1.3"},
				{"RCPT TO:<alice@exa\u0085mple.org>", "501 5.1.3"},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"DATA\r\nhi\r\n.", "354 "},
				{"", "250 2.0.0 <alice@example.org> delivered"},
			},
			logs: map[string]int{"alice": 1},
		},
		{
			// A user whose name has capitals ("Carol") is reached by an
			// address a mail server folded to lower case (carol@, as Exim
			// sends by default), with an extension too; only "Carol@"
			// reached it, and the rest got 550.
			name:   "a user with capitals, the address folded",
			opts:   LMTPOptions{RecipientDelimiter: "+"},
			users:  []string{"Carol", "alice"},
			folded: true,
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<s@example.net>", "250 "},
				{"RCPT TO:<carol@example.org>", "250 "},
				{"RCPT TO:<CAROL+lists@example.org>", "250 "},
				{"RCPT TO:<nobody@example.org>", "550 "},
				{"DATA\r\nSubject: x\r\n\r\nhi\r\n.", "354 "},
				{"", "250 2.0.0 <carol@example.org>"},
				{"", "250 2.0.0 <CAROL+lists@example.org>"},
			},
			logs: map[string]int{"Carol": 1},
		},
		{
			// A MAIL inside a transaction: refused, and the transaction
			// goes on whole (the recipient before it got "250 OK:
			// queued" after DATA, its message stored nowhere).
			name: "a second MAIL without RSET",
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<first@example.net>", "250 "},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"MAIL FROM:<second@example.net>", "503 5.5.1"},
				{"RCPT TO:<bob@example.org>", "250 "},
				{"DATA\r\nhi\r\n.", "354 "},
				{"", "250 2.0.0 <alice@example.org> delivered"},
				{"", "250 2.0.0 <bob@example.org> delivered"},
				{"MAIL FROM:<third@example.net>", "250 "},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"MAIL FROM:<fourth@example.net>", "503 5.5.1"},
				{"RSET", "250 "},
				{"MAIL FROM:<fourth@example.net>", "250 "},
			},
			logs: map[string]int{"alice": 1, "bob": 1},
		},
		{
			name: "recipient limit",
			opts: LMTPOptions{MaxRecipients: 1},
			steps: []step{
				{"LHLO mta.test", "250 "},
				{"MAIL FROM:<s@example.net>", "250 "},
				{"RCPT TO:<alice@example.org>", "250 "},
				{"RCPT TO:<bob@example.org>", "452 4.5.3"},
				{"DATA\r\nhi\r\n.", "354 "},
				{"", "250 2.0.0 <alice@example.org>"},
			},
			logs: map[string]int{"alice": 1, "bob": 0},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			users := c.users
			if users == nil {
				users = []string{"alice", "bob"}
			}
			f := newFixture(t, users...)
			if c.folded {
				f.d.Users = foldedDir(f.d.Users.(StaticDirectory))
			}
			addr := serve(t, f.d, c.opts)
			s := dialScripted(t, addr)
			for _, st := range c.steps {
				if st.send != "" {
					s.write(st.send + "\r\n")
				}
				_, line := s.reply()
				if !strings.HasPrefix(line, st.want) {
					t.Fatalf("after %q: reply %q, want %q", st.send, line, st.want)
				}
			}
			s.cmd("QUIT", "221 ")
			for u, n := range c.logs {
				if h, err := f.store.Head(testCtx(t), u); err != nil || h != uint64(n) {
					t.Errorf("log of %s has head %d (%v), want %d", u, h, err, n)
				}
			}
		})
	}
}

func TestLMTPTemporaryFailurePerRecipient(t *testing.T) {
	f := newFixture(t, "alice", "bob")
	f.d.Log = &failFor{Appender: f.store, user: "bob"}
	addr := serve(t, f.d, LMTPOptions{})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	s.cmd("MAIL FROM:<s@example.net>", "250 ")
	s.cmd("RCPT TO:<alice@example.org>", "250 ")
	s.cmd("RCPT TO:<bob@example.org>", "250 ")
	s.cmd("DATA", "354 ")
	s.write("hi\r\n.\r\n")
	s.expect("250 2.0.0 <alice@example.org>")
	s.expect("451 4.3.0 <bob@example.org>")
	if got := f.bodies(t, "alice"); len(got) != 1 {
		t.Errorf("alice has %d entries, want 1", len(got))
	}
}

// failFor makes appends for one user fail as if the store were unavailable.
type failFor struct {
	Appender
	user string
}

func (f *failFor) Append(ctx testContext, user string, batch [][]byte) (uint64, error) {
	if user == f.user {
		return 0, errUnavailableForTest
	}
	return f.Appender.Append(ctx, user, batch)
}

func TestLMTPConfidentiality(t *testing.T) {
	f := newFixture(t, "alice", "bob")
	addr := serve(t, f.d, LMTPOptions{})
	c := dialLMTP(t, addr)
	token := "tok-" + strings.Repeat("Zq7", 8) + "-secret"
	msg := []byte("Subject: " + token + "\r\n\r\n" + strings.Repeat(token+"\r\n", 50))
	if r, d := sendGo(t, c, msg, "alice@example.org", "bob@example.org"); len(r)+len(d) > 0 {
		t.Fatalf("delivery failed: %v %v", r, d)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if got := f.bodies(t, "alice"); len(got) != 1 || !bytes.Contains(got[0], []byte(token)) {
		t.Fatal("the token is not in alice's message: the scan below would prove nothing")
	}
	// Scan while the store is open (WAL not yet checkpointed), then after
	// closing it.
	scan := func(when string) {
		n := 0
		err := filepath.WalkDir(f.dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n++
			if bytes.Contains(b, []byte(token)) || bytes.Contains(b, []byte("Zq7Zq7Zq7")) {
				t.Errorf("%s: %s holds message plaintext", when, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("%s: no files under %s", when, f.dir)
		}
	}
	scan("store open")
	f.store.Close()
	scan("store closed")
}

func TestReservation(t *testing.T) {
	l := NewLMTP(&Deliverer{}, LMTPOptions{MaxInflightBytes: 100})
	a, b := &reservation{l: l}, &reservation{l: l}
	if !a.grow(300) || !a.grow(200) {
		t.Fatal("growing the only reservation in flight failed, want success whatever the size")
	}
	if b.grow(1) {
		t.Fatal("a second reservation grew over the budget")
	}
	a.release()
	if got := l.inflight.Load(); got != 0 {
		t.Fatalf("%d bytes in flight after release, want 0", got)
	}
	if !a.grow(60) || !b.grow(40) {
		t.Fatal("growing within the budget failed")
	}
	if a.grow(1) || b.grow(1) {
		t.Fatal("growing over a full budget succeeded")
	}
	b.release()
	if !a.grow(40) {
		t.Fatal("growing into a released share failed")
	}
}

// barrierLog lets appends return only once n of them are in flight at the
// same time, so it fails (as unavailable) unless a message's users are
// appended concurrently.
type barrierLog struct {
	Appender
	n       int
	arrived chan struct{}
	release chan struct{}
}

func (b *barrierLog) Append(ctx testContext, user string, batch [][]byte) (uint64, error) {
	b.arrived <- struct{}{}
	select {
	case <-b.release:
	case <-time.After(20 * time.Second):
		return 0, errUnavailableForTest
	}
	return b.Appender.Append(ctx, user, batch)
}

func TestLMTPRecipientsAppendConcurrently(t *testing.T) {
	f := newFixture(t, "alice", "bob", "carol")
	b := &barrierLog{Appender: f.store, n: 3, arrived: make(chan struct{}, 3), release: make(chan struct{})}
	go func() {
		for range b.n {
			<-b.arrived
		}
		close(b.release)
	}()
	f.d.Log = b
	addr := serve(t, f.d, LMTPOptions{})
	c := dialLMTP(t, addr)
	r, d := sendGo(t, c, []byte("hi\r\n"), "alice@example.org", "bob@example.org", "carol@example.org")
	if len(r)+len(d) > 0 {
		t.Fatalf("RCPT errors %v, DATA errors %v; want all delivered concurrently", r, d)
	}
}
