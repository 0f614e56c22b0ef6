package imapd

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestAppendCutShortAppendsNothing: a client whose connection ends inside
// an APPEND's message literal (it crashed, its network went, the user
// closed it mid-upload) sent only part of the message. Nothing may be
// appended: the part was stored as a whole message, in the log and on
// every device, and a client that then appends the message again leaves
// the user a cut copy beside it.
func TestAppendCutShortAppendsNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	part := "From: a@example.org\r\nSubject: cut short\r\n\r\nonly the start of the body"
	for _, lit := range []string{"{1000}", "{1000+}"} {
		rc := loggedInRaw(t, d.addr)
		rc.cmd("b1 APPEND INBOX " + lit)
		if !strings.HasSuffix(lit, "+}") {
			rc.until("+ ")
		}
		rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := rc.c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		rc.c.(*net.TCPConn).CloseWrite()
		// The session has done with the command once the server closes
		// the connection.
		rc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		rest, err := io.ReadAll(rc.br)
		if err != nil {
			t.Fatalf("APPEND %s cut short: reading the server's answer: %v", lit, err)
		}
		if strings.Contains(string(rest), "b1 OK") {
			t.Errorf("APPEND %s cut short after %d bytes: answered %q", lit, len(part), rest)
		}
	}
	rc := loggedInRaw(t, d.addr)
	rc.cmd("s1 STATUS INBOX (MESSAGES)")
	if got := rc.until("s1 "); !strings.Contains(got, "(MESSAGES 4)") {
		t.Errorf("INBOX after two APPENDs cut short: %q, want its 4 messages", got)
	}
}
