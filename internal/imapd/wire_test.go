package imapd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wire is an IMAP client that speaks raw protocol lines, for the
// conformance tests: it sends commands as written (synchronizing literals
// wait for the server's "+") and reads every response whole, literals
// included, so a test can check each untagged reply as an independent
// client would.
type wire struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
	n  int
}

// literalEnd matches a literal announced at the end of a response line.
var literalEnd = regexp.MustCompile(`~?\{([0-9]+)\}\r\n$`)

func dialWire(t *testing.T, addr string) *wire {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := &wire{t: t, c: c, br: bufio.NewReader(c)}
	if g := w.response(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting: %q", g)
	}
	return w
}

// loginWire dials and logs in.
func loginWire(t *testing.T, addr string) *wire {
	t.Helper()
	w := dialWire(t, addr)
	w.ok(`LOGIN alice "` + testPassword + `"`)
	return w
}

// response reads one response: a line and the literals it announces.
func (w *wire) response() string {
	w.t.Helper()
	w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	for {
		line, err := w.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			w.t.Fatalf("reading a response: %v; got %q", err, b.String())
		}
		m := literalEnd.FindStringSubmatch(line)
		if m == nil {
			return b.String()
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(w.br, buf); err != nil {
			w.t.Fatalf("reading a literal of %d bytes: %v", n, err)
		}
		b.Write(buf)
	}
}

// send writes raw bytes.
func (w *wire) send(s string) {
	w.t.Helper()
	w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(w.c, s); err != nil {
		w.t.Fatalf("writing %q: %v", s, err)
	}
}

// syncLiteral matches a synchronizing literal announcement in a command.
var syncLiteral = regexp.MustCompile(`~?\{[0-9]+\}\r\n`)

// run sends cmd under a new tag and returns the untagged responses and the
// tagged one. At each synchronizing literal it waits for "+"; any other
// answer there ends the command.
func (w *wire) run(cmd string) (untagged []string, tagged string) {
	w.t.Helper()
	w.n++
	tag := fmt.Sprintf("t%d", w.n)
	return w.runTagged(tag, cmd)
}

func (w *wire) runTagged(tag, cmd string) (untagged []string, tagged string) {
	w.t.Helper()
	rest := tag + " " + cmd + "\r\n"
	for {
		loc := syncLiteral.FindStringIndex(rest)
		if loc == nil {
			w.send(rest)
			break
		}
		w.send(rest[:loc[1]])
		rest = rest[loc[1]:]
		r := w.response()
		if strings.HasPrefix(r, "+") {
			continue
		}
		if strings.HasPrefix(r, tag+" ") {
			return untagged, r
		}
		untagged = append(untagged, r)
		// An untagged response before the answer to the literal: keep
		// waiting for it.
		for {
			r = w.response()
			if strings.HasPrefix(r, "+") {
				break
			}
			if strings.HasPrefix(r, tag+" ") {
				return untagged, r
			}
			untagged = append(untagged, r)
		}
	}
	for i := 0; i < 100000; i++ {
		r := w.response()
		if strings.HasPrefix(r, tag+" ") {
			return untagged, r
		}
		untagged = append(untagged, r)
	}
	w.t.Fatalf("%s: no tagged reply", cmd)
	return nil, ""
}

// ok runs cmd and fails the test unless it is answered OK.
func (w *wire) ok(cmd string) []string {
	w.t.Helper()
	u, tagged := w.run(cmd)
	if !strings.Contains(tagged, " OK") || strings.Index(tagged, " OK") != strings.Index(tagged, " ") {
		w.t.Fatalf("%s: got %q (untagged %q), want OK", cmd, tagged, u)
	}
	return u
}

// status returns the status word and response code of a tagged reply:
// "NO [TOOBIG]" for "t3 NO [TOOBIG] too big".
func status(tagged string) string {
	f := strings.SplitN(strings.TrimRight(tagged, "\r\n"), " ", 4)
	if len(f) < 2 {
		return tagged
	}
	if len(f) > 2 && strings.HasPrefix(f[2], "[") {
		return f[1] + " " + f[2]
	}
	return f[1]
}

// expectUntagged checks that got (responses with CRLF) is exactly want
// (without CRLF), in order.
func expectUntagged(t *testing.T, cmd string, got []string, want ...string) {
	t.Helper()
	trimmed := make([]string, len(got))
	for i, g := range got {
		trimmed[i] = strings.TrimSuffix(g, "\r\n")
	}
	if !slices.Equal(trimmed, want) {
		t.Errorf("%s:\n got  %q\n want %q", cmd, trimmed, want)
	}
}
