package imapd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// wireLine is one line a logging proxy saw: which connection, which side
// sent it (client 'C' or server 'S'), and when.
type wireLine struct {
	conn int
	from byte
	text string
	at   time.Time
}

func (l wireLine) String() string {
	return fmt.Sprintf("%s %d %c %s", l.at.Format("15:04:05.000"), l.conn, l.from, l.text)
}

// imapProxy forwards connections to an IMAP server and records every line
// both ways, as a client's conversation log.
type imapProxy struct {
	addr string
	mu   sync.Mutex
	log  []wireLine
	next int
}

// newIMAPProxy listens on a loopback port and forwards to target until the
// test ends; a test that fails logs the end of the conversation.
func newIMAPProxy(t *testing.T, target string) *imapProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &imapProxy{addr: ln.Addr().String()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("IMAP conversation through %s (last 150 lines):\n%s", p.addr, p.dumpTail(150))
		}
	})
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, s)
			connsMu.Unlock()
			p.mu.Lock()
			p.next++
			id := p.next
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(id, 'C', c, s) }()
			go func() { defer wg.Done(); p.pipe(id, 'S', s, c) }()
		}
	}()
	return p
}

// pipe copies from src to dst, recording src's lines.
func (p *imapProxy) pipe(id int, from byte, src, dst net.Conn) {
	defer dst.Close()
	br := bufio.NewReaderSize(src, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			p.mu.Lock()
			p.log = append(p.log, wireLine{id, from, strings.TrimRight(line, "\r\n"), time.Now()})
			p.mu.Unlock()
			if _, werr := io.WriteString(dst, line); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// lines returns the log so far.
func (p *imapProxy) lines() []wireLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wireLine(nil), p.log...)
}

// waitFor waits up to limit for a line matching re from side from, after
// index since, and returns its index, or -1.
func (p *imapProxy) waitFor(since int, from byte, re *regexp.Regexp, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for {
		ls := p.lines()
		for i := since; i < len(ls); i++ {
			if ls[i].from == from && re.MatchString(ls[i].text) {
				return i
			}
		}
		if time.Now().After(deadline) {
			return -1
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dumpTail returns the last n lines of the log, for failure messages.
func (p *imapProxy) dumpTail(n int) string {
	ls := p.lines()
	var b strings.Builder
	for _, l := range ls[max(0, len(ls)-n):] {
		b.WriteString(l.String() + "\n")
	}
	return b.String()
}

var (
	taggedNotOK = regexp.MustCompile(`^[^* +]\S* (NO|BAD)\b`)
	untaggedBad = regexp.MustCompile(`^\* (NO|BAD)\b`)
	selectCmd   = regexp.MustCompile(`(?i)^\S+ (SELECT|EXAMINE) "?([^"]*)"?$`)
	fetchFlags  = regexp.MustCompile(`^\* \d+ FETCH \(.*\bFLAGS \(([^)]*)\)`)
	flagsResp   = regexp.MustCompile(`^\* FLAGS \(([^)]*)\)`)
)

// checkConversation checks a recorded conversation as an independent
// client would: no NO or BAD from the server, and on every connection no
// FETCH showing a keyword that the latest FLAGS did not list (RFC 9051
// section 7.3.5).
func checkConversation(t *testing.T, log []wireLine) {
	t.Helper()
	flags := map[int]map[string]bool{}
	for _, l := range log {
		if l.from != 'S' {
			continue
		}
		if taggedNotOK.MatchString(l.text) || untaggedBad.MatchString(l.text) {
			t.Errorf("the server answered %q", l)
		}
		if m := flagsResp.FindStringSubmatch(l.text); m != nil {
			set := map[string]bool{}
			for _, f := range strings.Fields(m[1]) {
				set[strings.ToLower(f)] = true
			}
			flags[l.conn] = set
			continue
		}
		if m := fetchFlags.FindStringSubmatch(l.text); m != nil {
			for _, f := range strings.Fields(m[1]) {
				if !strings.HasPrefix(f, `\`) && !flags[l.conn][strings.ToLower(f)] {
					t.Errorf("keyword %s shown before a FLAGS listed it: %s", f, l)
				}
			}
		}
	}
}

// idling waits up to limit for the server's continuation to an IDLE on a
// connection whose mailbox selected last is box, after line since, and
// returns the line's index.
func (p *imapProxy) idling(t *testing.T, since int, box string, limit time.Duration) int {
	t.Helper()
	idle := regexp.MustCompile(`^\+ `)
	for deadline := time.Now().Add(limit); ; time.Sleep(100 * time.Millisecond) {
		sel := map[int]string{}
		for i, l := range p.lines() {
			if m := selectCmd.FindStringSubmatch(l.text); l.from == 'C' && m != nil {
				sel[l.conn] = m[2]
			}
			if i >= since && l.from == 'S' && idle.MatchString(l.text) && strings.EqualFold(sel[l.conn], box) {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client did not idle on %s within %v", box, limit)
		}
	}
}

// idlingNow waits up to limit for a connection whose mailbox selected
// last is box to be in IDLE: the server's continuation came after its
// IDLE, and it has sent nothing since.
func (p *imapProxy) idlingNow(t *testing.T, box string, limit time.Duration) {
	t.Helper()
	idleCmd := regexp.MustCompile(`(?i)^\S+ IDLE$`)
	for deadline := time.Now().Add(limit); ; time.Sleep(100 * time.Millisecond) {
		sel := map[int]string{}
		idle := map[int]int{} // 0: not idling, 1: IDLE sent, 2: continued
		for _, l := range p.lines() {
			switch {
			case l.from == 'C' && selectCmd.MatchString(l.text):
				sel[l.conn] = selectCmd.FindStringSubmatch(l.text)[2]
				idle[l.conn] = 0
			case l.from == 'C' && idleCmd.MatchString(l.text):
				idle[l.conn] = 1
			case l.from == 'C':
				idle[l.conn] = 0
			case l.from == 'S' && idle[l.conn] == 1 && strings.HasPrefix(l.text, "+ "):
				idle[l.conn] = 2
			}
		}
		for conn, state := range idle {
			if state == 2 && strings.EqualFold(sel[conn], box) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection idles on %s within %v", box, limit)
		}
	}
}
