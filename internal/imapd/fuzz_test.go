package imapd

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"cspool/internal/devicetest"
	"cspool/internal/mailstore"
	"cspool/internal/syncer"
)

// FuzzIMAPSession feeds raw protocol lines, after a successful LOGIN, to a
// real server over loopback with a small mailbox behind it (the test
// messages in INBOX, mutations going through a real syncer and spool). The
// server may answer anything and close the connection, but it must not panic
// or hang, and a fresh connection must still log in and get NOOP OK.
func FuzzIMAPSession(f *testing.F) {
	addr := fuzzServer(f)
	for _, s := range []string{
		"a SELECT INBOX\r\nb FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
		"a SELECT INBOX\r\nb UID FETCH 1:* (BODY[1.MIME] BINARY.PEEK[1] RFC822.SIZE INTERNALDATE)\r\n",
		"a SELECT INBOX\r\nb STORE 1:2 +FLAGS (\\Flagged $Label1)\r\nc STORE 2 -FLAGS.SILENT (\\Flagged)\r\n",
		"a SELECT INBOX\r\nb COPY 1 Archive\r\nc MOVE 2 Trash\r\nd STORE 1 +FLAGS (\\Deleted)\r\ne EXPUNGE\r\n",
		"a SELECT INBOX\r\nb UID SEARCH OR SUBJECT lunch (NOT SEEN) BODY noon\r\nc SEARCH RETURN (MIN MAX COUNT) ALL\r\n",
		"a SELECT INBOX\r\nb IDLE\r\nDONE\r\nc CLOSE\r\n",
		"a APPEND Drafts (\\Draft) {12+}\r\nSubject: x\r\n\r\nb LIST \"\" \"*\" RETURN (STATUS (MESSAGES UIDNEXT SIZE))\r\n",
		"a CREATE Work (USE (\\Flagged))\r\nb RENAME Work Play\r\nc SUBSCRIBE Play\r\nd DELETE Play\r\n",
		"a EXAMINE INBOX\r\nb STORE 1 +FLAGS (\\Seen)\r\nc FETCH * BODY[]\r\nd UNSELECT\r\n",
		"a SELECT INBOX\r\nb FETCH 4294967295 (FLAGS\r\nc STORE 1 FLAGS ((\r\n{999999999}\r\n",
		"a ENABLE UTF8=ACCEPT IMAP4rev2\r\nb SELECT \"&AOk-t&AOk-\"\r\nc STATUS INBOX (MESSAGES UNSEEN)\r\nd LOGOUT\r\n",
		"a ENABLE UTF8=ACCEPT\r\nb CREATE {5}\r\nA & B\r\nc LIST \"\" (\"A & *\" {2+}\r\n&*)\r\nd RENAME \"A & B\" C&D\r\ne APPEND {3}\r\nx&y (\\Seen R&D) {3+}\r\nhi\n\r\nf COPY 1 {3+}\r\nx&y\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := dialFuzz(t, addr)
		c.talk(t, in)
		c = dialFuzz(t, addr)
		got := c.talk(t, []byte("n NOOP\r\nz LOGOUT\r\n"))
		if !strings.Contains("\n"+got, "\nn OK") {
			t.Fatalf("after input %q, a fresh session got %q, want n OK", in, got)
		}
	})
}

// fuzzConn is a logged-in raw connection.
type fuzzConn struct {
	c  *net.TCPConn
	br *bufio.Reader
}

func dialFuzz(t *testing.T, addr string) *fuzzConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing the IMAP server: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fc := &fuzzConn{c: c.(*net.TCPConn), br: bufio.NewReader(c)}
	if _, err := c.Write([]byte("L LOGIN alice \"" + testPassword + "\"\r\n")); err != nil {
		t.Fatalf("sending LOGIN: %v", err)
	}
	for i := 0; ; i++ {
		line, err := fc.br.ReadString('\n')
		if err != nil || i > 10 {
			t.Fatalf("waiting for the LOGIN reply: %q, %v", line, err)
		}
		if strings.HasPrefix(line, "L ") {
			if !strings.HasPrefix(line, "L OK") {
				t.Fatalf("LOGIN: %q, want L OK", line)
			}
			return fc
		}
	}
}

// talk sends in, closes the sending half and returns what the server says
// until it closes the connection.
func (fc *fuzzConn) talk(t *testing.T, in []byte) string {
	t.Helper()
	go func() {
		fc.c.Write(in) // the server may close first
		fc.c.CloseWrite()
	}()
	var b strings.Builder
	_, err := io.Copy(&b, fc.br)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("reading until the server closes: %v; got %q", err, b.String())
	}
	return b.String()
}

// fuzzServer starts a spool, a device (mail store, syncer, IMAP server) and
// delivers the test messages; it returns the IMAP address.
func fuzzServer(f *testing.F) string {
	f.Helper()
	sp := devicetest.NewSpool(f)
	applied := make(chan *Server, 1)
	d := sp.Device("device", syncer.Config{Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond,
		OnApplied: func(res *mailstore.Result) {
			s := <-applied
			s.Applied(res)
			applied <- s
		}})
	srv, err := New(Config{Store: d.Store, Submit: d.Sync, User: "alice", Password: testPassword, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	applied <- srv
	addr := serveAndSync(f, srv, d.Sync)
	var pos uint64
	for _, k := range order {
		pos = sp.Deliver([]byte(messages[k]))
	}
	d.Synced(pos)
	return addr
}
