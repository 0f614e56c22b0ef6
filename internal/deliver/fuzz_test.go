package deliver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"cspool/internal/spool/sqlitestore"
)

// lmtpReply is one line of an LMTP reply (RFC 5321 section 4.2).
var lmtpReply = regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)

// FuzzLMTPSession feeds raw protocol bytes to a real listener on loopback,
// then closes the sending half. The server must answer only with well-formed
// reply lines, close the connection within the read deadline, and still
// greet and answer LHLO on a fresh connection afterwards.
func FuzzLMTPSession(f *testing.F) {
	st, err := sqlitestore.Open(f.TempDir(), sqlitestore.Options{})
	if err != nil {
		f.Fatalf("opening store: %v", err)
	}
	f.Cleanup(func() { st.Close() })
	d := &Deliverer{Log: st, SpoolKey: mustKey(f), Users: StaticDirectory{"alice": mustKey(f).Public()}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	l := NewLMTP(d, LMTPOptions{MaxMessageBytes: 4096, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		Domains: []string{"example.org"}, RecipientDelimiter: "+"})
	done := make(chan error, 1)
	go func() { done <- l.Serve(ln) }()
	f.Cleanup(func() {
		l.Close()
		<-done
	})
	addr := ln.Addr().String()

	for _, s := range []string{
		"LHLO mx\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"LHLO mx\r\nMAIL FROM:<a@example.net> SIZE=99999\r\nQUIT\r\n",
		"LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<alice+x@EXAMPLE.ORG>\r\nRCPT TO:<alice@other>\r\nDATA\r\n..dot\r\n.\r\n",
		"LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice>\r\nBDAT 5 LAST\r\nhello",
		"LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n",
		"HELO mx\r\nEHLO mx\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHB3\r\nVRFY alice\r\nNOOP\r\nRSET\r\n",
		"LHLO mx\r\nDATA\r\nRCPT TO:<alice>\r\nMAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8\r\n",
		"LHLO \x00\xff\r\n\n\r\r\nmail from:<\"q\\\"x\"@b>\r\n",
		"LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice>\r\nDATA\r\nx\r\r\n.\r\nNOOP\r\n",
		"LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice>\r\nDATA\r\n.\r\r\n..\r\n.\rx\r\n.\r\nRSET\r\n",
		"LHLO mx\r\nNOOP " + strings.Repeat("x", 5000) + "\r\nNOOP\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		replies := converse(t, addr, in)
		if len(replies) == 0 || !strings.HasPrefix(replies[0], "220 ") {
			t.Fatalf("greeting %q, want 220", replies)
		}
		for _, r := range replies {
			if !lmtpReply.MatchString(r) {
				t.Fatalf("malformed reply line %q after input %q", r, in)
			}
		}
		after := converse(t, addr, []byte("LHLO check\r\nQUIT\r\n"))
		if len(after) < 2 || !strings.HasPrefix(after[1], "250") {
			t.Fatalf("after input %q, a fresh connection got %q, want a 250 reply to LHLO", in, after)
		}
	})
}

// converse dials addr, sends in, closes the sending half and returns every
// reply line until the server closes the connection (within 10 s).
func converse(t *testing.T, addr string, in []byte) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing the listener: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		writeErr <- err
	}()
	var lines []string
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			lines = append(lines, strings.TrimRight(line, "\r\n"))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			break
		}
		if err != nil {
			t.Fatalf("reading replies: %v (want the server to close the connection); got %q", err, lines)
		}
	}
	<-writeErr // a write error is fine: the server may close first
	return lines
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}
