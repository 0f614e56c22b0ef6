package imapstress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// client is one IMAP connection with the client's view of the selected
// mailbox, kept from every response as a careful client would keep it, and
// checked against each response.
type client struct {
	id   int
	cfg  *Config
	rep  *recorder
	c    net.Conn
	br   *bufio.Reader
	next int // tag counter

	// The view: uids[i] and flags[i] are message i+1's (0 and nil while
	// unknown: announced by EXISTS, not fetched yet).
	uids     []uint32
	flags    [][]string
	keywords map[string]bool // of the latest FLAGS, case-folded
	selected bool

	cmd string // command in progress, for the rules that depend on it
}

// lineTimeout bounds the wait for one response line.
const lineTimeout = 60 * time.Second

func dial(cfg *Config, id int, rep *recorder) (*client, error) {
	addr := cfg.Addrs[max(id, 0)%len(cfg.Addrs)]
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("client %d: dialing %s: %w", id, addr, err)
	}
	cl := &client{id: id, cfg: cfg, rep: rep, c: c, br: bufio.NewReader(c)}
	greeting, err := cl.readLine()
	if err != nil {
		c.Close()
		return nil, err
	}
	if !strings.HasPrefix(greeting, "* OK") {
		c.Close()
		return nil, fmt.Errorf("client %d: greeting %q", id, greeting)
	}
	return cl, nil
}

func (cl *client) close() { cl.c.Close() }

// readLine reads one response line, literals included.
func (cl *client) readLine() (string, error) {
	cl.c.SetReadDeadline(time.Now().Add(lineTimeout))
	var b strings.Builder
	for {
		s, err := cl.br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("client %d: reading: %w (after %q)", cl.id, err, b.String()+s)
		}
		s = strings.TrimRight(s, "\r\n")
		b.WriteString(s)
		n, ok := literalSize(s)
		if !ok {
			return b.String(), nil
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(cl.br, buf); err != nil {
			return "", fmt.Errorf("client %d: reading a literal: %w", cl.id, err)
		}
		b.Write(buf)
	}
}

var literalRE = regexp.MustCompile(`\{(\d+)\+?\}$`)

func literalSize(s string) (int, bool) {
	m := literalRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n > 64<<20 {
		return 0, false
	}
	return n, true
}

func (cl *client) send(s string) error {
	cl.c.SetWriteDeadline(time.Now().Add(lineTimeout))
	if _, err := cl.c.Write([]byte(s)); err != nil {
		return fmt.Errorf("client %d: writing: %w", cl.id, err)
	}
	return nil
}

// do sends a command and reads up to its tagged reply, handling every
// untagged response on the way. It returns the tagged reply's status and
// text.
func (cl *client) do(name, args string) (string, error) {
	return cl.doLiteral(name, args, nil)
}

// doLiteral is do with a synchronizing literal ending the command.
func (cl *client) doLiteral(name, args string, literal []byte) (string, error) {
	cl.next++
	start := time.Now()
	tag := fmt.Sprintf("c%d.%d", cl.id, cl.next)
	cl.cmd = name
	defer func() { cl.cmd = "" }()
	line := tag + " " + name
	if args != "" {
		line += " " + args
	}
	if err := cl.send(line + "\r\n"); err != nil {
		return "", err
	}
	if literal != nil {
		for {
			l, err := cl.readLine()
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(l, "+") {
				break
			}
			if strings.HasPrefix(l, tag+" ") {
				return cl.tagged(name, l[len(tag)+1:], start), nil
			}
			cl.line(name, l)
		}
		if err := cl.send(string(literal) + "\r\n"); err != nil {
			return "", err
		}
	}
	for {
		l, err := cl.readLine()
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(l, tag+" ") {
			return cl.tagged(name, l[len(tag)+1:], start), nil
		}
		cl.line(name, l)
	}
}

// line handles a line that is not the tagged reply.
func (cl *client) line(name, l string) {
	if strings.HasPrefix(l, "* ") {
		cl.untagged(l[2:])
		return
	}
	cl.rep.violation(cl.id, name, "unexpected line %q", l)
}

// tagged records a reply that is not OK as an error (NO [EXPUNGEISSUED]
// is counted apart: RFC 9051 allows it when another session expunged a
// message the command names).
func (cl *client) tagged(name, rest string, start time.Time) string {
	status, _, _ := strings.Cut(rest, " ")
	switch {
	case status == "OK":
		cl.rep.done(name, time.Since(start))
	case status == "NO" && strings.Contains(rest, "[EXPUNGEISSUED]"):
		cl.rep.done(name, time.Since(start))
		cl.rep.expungeIssued()
	default:
		cl.rep.violation(cl.id, name, "%s", rest)
	}
	return rest
}

var (
	numRespRE = regexp.MustCompile(`^(\d+) (EXISTS|EXPUNGE|RECENT|FETCH)\b(.*)$`)
	uidRE     = regexp.MustCompile(`\bUID (\d+)`)
	flagsRE   = regexp.MustCompile(`\bFLAGS \(([^)]*)\)`)
)

// untagged checks one untagged response against the view and applies it.
func (cl *client) untagged(l string) {
	if strings.HasPrefix(l, "FLAGS (") {
		kw := map[string]bool{}
		for _, f := range strings.Fields(strings.TrimSuffix(strings.TrimPrefix(l, "FLAGS ("), ")")) {
			kw[strings.ToLower(f)] = true
		}
		cl.keywords = kw
		return
	}
	if strings.HasPrefix(l, "BYE") && cl.cmd != "LOGOUT" {
		cl.rep.violation(cl.id, cl.cmd, "unexpected %q", l)
		return
	}
	m := numRespRE.FindStringSubmatch(l)
	if m == nil || !cl.selected {
		return
	}
	n, _ := strconv.Atoi(m[1])
	switch m[2] {
	case "EXISTS":
		if n < len(cl.uids) {
			cl.rep.violation(cl.id, cl.cmd, "EXISTS %d while %d messages are known and none was expunged", n, len(cl.uids))
			return
		}
		for len(cl.uids) < n {
			cl.uids = append(cl.uids, 0)
			cl.flags = append(cl.flags, nil)
		}
	case "EXPUNGE":
		switch cl.cmd {
		case "FETCH", "STORE", "SEARCH":
			// RFC 9051 section 7.5.1 (RFC 3501 section 7.4.1).
			cl.rep.violation(cl.id, cl.cmd, "EXPUNGE during %s", cl.cmd)
		}
		if n < 1 || n > len(cl.uids) {
			cl.rep.violation(cl.id, cl.cmd, "EXPUNGE %d of %d messages", n, len(cl.uids))
			return
		}
		cl.uids = append(cl.uids[:n-1], cl.uids[n:]...)
		cl.flags = append(cl.flags[:n-1], cl.flags[n:]...)
	case "FETCH":
		if n < 1 || n > len(cl.uids) {
			cl.rep.violation(cl.id, cl.cmd, "FETCH %d of %d messages: %q", n, len(cl.uids), l)
			return
		}
		if u := uidRE.FindStringSubmatch(m[3]); u != nil {
			uid64, _ := strconv.ParseUint(u[1], 10, 32)
			uid := uint32(uid64)
			if known := cl.uids[n-1]; known != 0 && known != uid {
				cl.rep.violation(cl.id, cl.cmd, "stale sequence number: FETCH %d says UID %d, the view has UID %d", n, uid, known)
				return
			}
			if (n > 1 && cl.uids[n-2] >= uid) || (n < len(cl.uids) && cl.uids[n] != 0 && cl.uids[n] <= uid) {
				cl.rep.violation(cl.id, cl.cmd, "UID %d at %d is out of order in the view", uid, n)
			}
			cl.uids[n-1] = uid
		}
		if f := flagsRE.FindStringSubmatch(m[3]); f != nil {
			var fl []string
			for _, x := range strings.Fields(f[1]) {
				if strings.EqualFold(x, `\Recent`) {
					continue
				}
				if x[0] != '\\' && !cl.keywords[strings.ToLower(x)] {
					cl.rep.violation(cl.id, cl.cmd, "keyword %s in FETCH %d before any FLAGS listed it", x, n)
				}
				fl = append(fl, x)
			}
			cl.flags[n-1] = normFlags(fl)
		}
	}
}

// normFlags sorts flags case-insensitively so views compare.
func normFlags(fl []string) []string {
	out := append([]string{}, fl...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && strings.ToLower(out[j]) < strings.ToLower(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	if out == nil {
		out = []string{}
	}
	return out
}
