package imapd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/loginguard"
)

// Framing limits.
const (
	// maxLine bounds one line of a command (literals excluded). go-imap's
	// parser gives up on a command beyond 50 KiB and ends the connection.
	maxLine = 48 << 10
	// maxRejectedBeforeLogin is how many lines the framer refuses before
	// login before it ends the connection.
	maxRejectedBeforeLogin = 10
	// maxBufferedLiteral is the largest literal go-imap takes in a
	// command other than APPEND (imapserver's checkBufferedLiteral).
	maxBufferedLiteral = 4096
)

// commands are the commands go-imap's server parses (imapserver/conn.go);
// "UID" is followed by one of uidCommands. A line naming anything else is
// answered here, since the library would end the connection on it before
// login.
var (
	commands = map[string]bool{
		"NOOP": true, "CHECK": true, "LOGOUT": true, "CAPABILITY": true, "STARTTLS": true,
		"AUTHENTICATE": true, "UNAUTHENTICATE": true, "LOGIN": true, "ENABLE": true,
		"CREATE": true, "DELETE": true, "RENAME": true, "SUBSCRIBE": true, "UNSUBSCRIBE": true,
		"STATUS": true, "LIST": true, "LSUB": true, "NAMESPACE": true, "IDLE": true,
		"SELECT": true, "EXAMINE": true, "CLOSE": true, "UNSELECT": true, "APPEND": true,
		"FETCH": true, "EXPUNGE": true, "STORE": true, "COPY": true, "MOVE": true, "SEARCH": true,
	}
	// beforeLogin are the commands of the not authenticated state (RFC
	// 9051 sections 6.1 and 6.2). The framer refuses the others there
	// itself: go-imap would ask for an APPEND's literal first, up to
	// APPENDLIMIT bytes, and answer BAD only once it had them all.
	beforeLogin = map[string]bool{
		"CAPABILITY": true, "NOOP": true, "LOGOUT": true,
		"STARTTLS": true, "AUTHENTICATE": true, "LOGIN": true,
	}
	uidCommands = map[string]bool{"FETCH": true, "EXPUNGE": true, "STORE": true, "COPY": true, "MOVE": true, "SEARCH": true}
	// httpRequest is the first line of an HTTP request: a web page making
	// a browser talk to the IMAP port. A line over maxLine (a page's URL
	// of 48 KiB or more) is known by its start (httpMethod) and its end
	// (httpVersion), the part readLine keeps of it.
	httpRequest = regexp.MustCompile(`^[A-Z]+ \S+ HTTP/\d`)
	httpMethod  = regexp.MustCompile(`^[A-Z]+ \S`)
	httpVersion = regexp.MustCompile(` HTTP/\d(\.\d)?\r?\n$`)
	// literalAt matches a literal announcement ending a line:
	// {N}, {N+}, ~{N} or ~{N+} (RFC 9051 section 4.3, RFC 7888, RFC 3516),
	// and a space before the line's end, which go-imap takes there too
	// (imapwire's CRLF accepts one, for clients that send it): the framer
	// passed `{N} ` on as no literal and took the client's next line for
	// a command, which go-imap read as the literal's data, going on into
	// the data of that line's own literal, which the framer passes
	// unread: the two out of step on where commands begin.
	literalAt = regexp.MustCompile(`~?\{([0-9]{1,19})(\+?)\} ?\r?\n$`)
	// literalStart matches a literal announcement and its line end at the
	// start of a string.
	literalStart = regexp.MustCompile(`^~?\{([0-9]{1,9})\+?\} ?\r?\n`)
)

// frameListener wraps each accepted connection in a frameConn. tls, if
// set, is offered with STARTTLS on connections that are not TLS already;
// requireTLS refuses logins over a connection without TLS from a client
// that is not on a loopback address.
type frameListener struct {
	net.Listener
	tls        *tls.Config
	requireTLS bool
}

func (l frameListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := newFrameConn(c)
	_, fc.secure = c.(*tls.Conn)
	if !fc.secure {
		fc.startTLS = l.tls
	}
	fc.cleartextLogin = !l.requireTLS || fromLoopback(c)
	return fc, nil
}

// fromLoopback reports whether c's client is on this machine.
func fromLoopback(c net.Conn) bool {
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// frameConn sits between a client and go-imap's parser and reads the
// client's input one command at a time: lines and the literals they
// announce (RFC 9051 section 2.2). It hands the library only commands the
// library can parse without ending the connection, and answers the others
// itself:
//
//   - a line whose tag or command name does not parse, or that names a
//     command the server does not know, gets BAD (tagged when the tag
//     parses, RFC 9051 section 7.1.3) and the connection goes on, before
//     login as after; go-imap would end the connection instead. The first
//     line of an HTTP request (a web page making a browser talk to the
//     port) ends the connection at once, and so do more than
//     maxRejectedBeforeLogin refused lines before login. Before login, a
//     command only valid after it gets BAD here too, before any literal of
//     it is asked for;
//   - every synchronizing literal is passed on as non-synchronizing, and
//     the continuation request "+" is sent here, only once the library asks
//     for the literal's bytes: when the library refuses the command at the
//     announcement (a literal over APPENDLIMIT gets NO [TOOBIG], RFC 7889),
//     the client is never asked for the data;
//   - when the library answers a command before reading all of it (a
//     syntax error, or a refused non-synchronizing literal), the rest of
//     that command, literals included, is read and dropped here, so no
//     part of it is ever taken for a command.
//
// Only the goroutine handling commands reads; writes come from it and from
// an IDLE update goroutine, serialised by mu.
type frameConn struct {
	net.Conn
	br *bufio.Reader
	// raw is the connection as accepted, which STARTTLS never replaces
	// (it puts a TLS connection on it, under mu): its deadlines are the
	// TLS connection's too.
	raw net.Conn

	mu        sync.Mutex
	tag       string // tag of the command in progress
	name      string // its name, upper case ("UID FETCH")
	ended     bool   // its tagged reply has been written
	selected  bool   // a mailbox is selected (the session says so: setSelected)
	contReqs  int    // continuation requests written for it (IDLE, AUTHENTICATE) not yet answered
	authed    bool   // a login succeeded
	outStart  bool   // the next byte written starts a line
	outPrefix []byte // the start of the line being written
	text      []byte // the command's lines and short literals, for diagnose
	outTail   []byte // the end of the line being written
	outSkip   int64  // bytes of a literal being written, still to skip
	outDrop   bool   // the line being written is dropped, to its end (saveAlone)
	known     int64  // messages the client knows the selected mailbox has; -1: none selected
	// knownBefore is known before the SELECT, EXAMINE, CLOSE or UNSELECT
	// in progress, put back if it fails: go-imap refuses a syntax error
	// or a name it cannot decode before it leaves the mailbox, which
	// stays selected, with the client's count.
	knownBefore int64
	tooBig      bool // the command's literal was refused as over maxBufferedLiteral
	tooLong     bool // the command's lines were cut off as over maxLine together
	tooDeep     bool // the command's search keys were cut off as nested beyond maxSearchDepth
	openQuote   bool // a line after a literal was cut off as ending inside a quoted string
	utf8Names   bool // the session spells mailbox names in UTF-8 (utf8names.go)

	// TLS (RFC 9051 sections 6.2.1 and 11.1): go-imap is told nothing of
	// it, since the framer reads above the TLS layer (the library would
	// upgrade the connection under the framer). The framer answers
	// STARTTLS itself and puts STARTTLS and LOGINDISABLED into the
	// library's capability lists before login.
	secure         bool        // the connection is TLS (implicit, or after STARTTLS)
	startTLS       *tls.Config // STARTTLS is offered (nil: not, or done)
	cleartextLogin bool        // a login is taken without TLS
	// upgraded is the TLS connection STARTTLS put on raw (nil: none),
	// for Close, which other goroutines call (go-imap's Server.Close at
	// the daemon's stop) while the reading one may be making it.
	upgraded atomic.Pointer[tls.Conn]

	// Output held back while a FETCH streams its responses (hold): go-imap
	// flushes every response on its own, one write to the socket each.
	holding bool
	held    []byte

	// Output kept from the client while the session completes a FETCH
	// response the library wrote (capture).
	capturing bool
	captured  []byte

	// The stored values that go in place of the library's in the FETCH
	// response being written (swapForms).
	formSwap *formSwap

	// Read state, used by the reading goroutine only.
	pending []byte // bytes of the current command to hand over
	lit     int64  // literal bytes still to hand over
	litSync bool   // the literal still needs "+" before the client sends it
	litWait bool   // the literal is announced; its bytes not yet asked for
	litBuf  []byte // the literal, a mailbox name read ahead and translated (readNameLiteral)
	// litName: the literal is the mailbox name of an APPEND, not its
	// message, and is bounded as a literal of any other command is.
	litName bool
	more    bool // the current command goes on after the literal
	size    int  // bytes of the current command's lines handed over (literals excluded)
	// depth follows the nesting of a SEARCH's keys over its lines; nil
	// for other commands.
	depth    *searchDepth
	rejected int // lines refused before login

	// Autologout (loggedIn), once logged in: lastActive is when
	// the client last sent a line or was last sent a tagged reply, under
	// mu; alarm looks at it; closed stops it.
	lastActive time.Time
	autologout time.Duration
	alarm      atomic.Pointer[time.Timer]
	closed     atomic.Bool
	loggedOut  func() // called once the autologout ends the session
}

func newFrameConn(c net.Conn) *frameConn {
	return &frameConn{Conn: c, raw: c, br: bufio.NewReaderSize(c, 16<<10), outStart: true, known: -1}
}

// Close closes the connection as it is, TLS once STARTTLS put it on. It
// is called from other goroutines than the one reading, which makes that
// swap (TestCloseBesideSTARTTLS); not under mu, which a write to a client
// that does not read holds.
func (fc *frameConn) Close() error {
	fc.closed.Store(true)
	if a := fc.alarm.Load(); a != nil {
		a.Stop()
	}
	if t := fc.upgraded.Load(); t != nil {
		return t.Close()
	}
	return fc.raw.Close()
}

// errFramingClosed ends the library's read loop after the framer closed the
// connection.
var errFramingClosed = errors.New("connection closed by the command framer")

// Read hands the library the current command's bytes, reading the next
// command when it asks for more at a command boundary.
func (fc *frameConn) Read(p []byte) (int, error) {
	for {
		if len(fc.pending) > 0 {
			n := copy(p, fc.pending)
			fc.pending = fc.pending[n:]
			return n, nil
		}
		if fc.lit > 0 || fc.litWait {
			if fc.litWait {
				fc.litWait = false
				if fc.commandEnded() {
					if err := fc.dropRest(); err != nil {
						return 0, err
					}
					continue
				}
				if fc.litBuf != nil {
					fc.pending, fc.litBuf = fc.litBuf, nil
					fc.note(fc.pending)
					continue
				}
				if fc.lit > maxBufferedLiteral && (fc.command() != "APPEND" || fc.litName) {
					// go-imap refuses such a literal where it buffers
					// strings, but then parses its bytes as an atom:
					// it gets a byte no argument takes instead, and
					// answers BAD (Write makes it NO [TOOBIG]). The
					// client is never asked for the bytes; those it
					// sends unasked are dropped with the command.
					fc.mu.Lock()
					fc.tooBig = true
					fc.mu.Unlock()
					if fc.litSync {
						fc.lit, fc.litSync, fc.more = 0, false, false
					} else {
						fc.litWait = true
					}
					fc.pending = []byte("\x00\r\n")
					continue
				}
				if fc.litSync {
					fc.litSync = false
					if err := fc.reply("+ Ready for literal data"); err != nil {
						return 0, err
					}
				}
				if fc.lit == 0 {
					continue
				}
			}
			n, err := fc.br.Read(p[:min(int64(len(p)), fc.lit)])
			fc.lit -= int64(n)
			fc.note(p[:n])
			if err == io.EOF && fc.lit > 0 {
				// The connection ended inside the literal: what came
				// is not the literal, and must not be taken for it
				// (an APPEND stored the part as a whole message).
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		if fc.more {
			if fc.commandEnded() {
				// The library answered without reading the rest.
				if err := fc.dropRest(); err != nil {
					return 0, err
				}
				continue
			}
			line, end, long, err := fc.readLine()
			if err != nil {
				return 0, err
			}
			if long || fc.size+len(line)+1 > maxLine {
				// Over the limit, this line or the command's lines
				// together (go-imap stops reading a command at 50 KiB
				// and took what followed for a command): the library
				// gets a byte no argument takes in place of the line,
				// and answers BAD (Write names the reason). Not the
				// end of the line alone: the command up to there may
				// be whole, and would be carried out. A literal the
				// line announces is dropped with the command.
				fc.mu.Lock()
				fc.tooLong = true
				fc.mu.Unlock()
				fc.literal(end)
				fc.pending = []byte("\x00\r\n")
				continue
			}
			if fc.depth != nil {
				// A line after a literal: its keys nest deeper than
				// the bound, and the library would parse them by
				// recursion. Refused as a line over the limit is.
				if fc.depth.line(string(line)); fc.depth.tooDeep() {
					fc.mu.Lock()
					fc.tooDeep = true
					fc.mu.Unlock()
					fc.literal(end)
					fc.pending = []byte("\x00\r\n")
					continue
				}
			}
			if quoteOpen(line) {
				// A quoted string left open at the end of the line:
				// go-imap reads it on into the client's next lines,
				// which the framer takes for commands of their own.
				// Refused as a line over the limit is.
				fc.mu.Lock()
				fc.openQuote = true
				fc.mu.Unlock()
				fc.literal(end)
				fc.pending = []byte("\x00\r\n")
				continue
			}
			fc.note(line)
			if err := fc.handOver(line, fc.command(), false); err != nil {
				return 0, err
			}
			fc.size += len(fc.pending)
			continue
		}
		if err := fc.nextCommand(); err != nil {
			return 0, err
		}
	}
}

// nextCommand reads lines until one starts a command the library can take,
// answering the others; or passes on a line answering a continuation
// request of the library's (IDLE's DONE, an AUTHENTICATE response).
func (fc *frameConn) nextCommand() error {
	for {
		line, end, long, err := fc.readLine()
		if err != nil {
			return err
		}
		fc.mu.Lock()
		fc.lastActive = time.Now()
		cont := fc.contReqs > 0 && !fc.ended
		if cont {
			fc.contReqs--
		}
		authed, selected, inProgress := fc.authed, fc.selected, fc.name
		fc.mu.Unlock()
		if cont {
			fc.pending = line
			// go-imap counts the line as part of the command, whose
			// lines it stops reading at 50 KiB (a long tag and an
			// AUTHENTICATE response): over maxLine together, it is
			// taken as a long line.
			long = long || fc.size+len(line) > maxLine
			fc.size += len(line)
			switch {
			case long && inProgress == "AUTHENTICATE":
				// The client's cancel (RFC 9051 section 6.2.2): the
				// library answers BAD under the command's tag.
				fc.pending = []byte("*\r\n")
			case long:
				// An empty line in place of IDLE's DONE: the library
				// answers BAD under the command's tag.
				fc.pending = []byte("\r\n")
			case inProgress == "IDLE" && strings.EqualFold(strings.TrimRight(string(line), "\r\n"), "DONE"):
				// The grammar's strings are case-insensitive (RFC 5234
				// section 2.3): go-imap takes "DONE" alone, and
				// answered "done" BAD, ending the IDLE with an error.
				fc.pending = []byte("DONE\r\n")
			}
			return nil
		}
		tag, name, problem := parseCommandStart(line)
		if problem == "" && !authed && !beforeLogin[name] {
			problem = fmt.Sprintf("[CLIENTBUG] %s is only valid after login (RFC 9051 section 3)", name)
		}
		// CHECK is a command of the selected state (RFC 3501 section
		// 6.4.1; RFC 3501 section 6: BAD or NO in another state); go-imap
		// takes it for NOOP in any state and answered OK.
		if problem == "" && authed && !selected && name == "CHECK" {
			problem = "[CLIENTBUG] CHECK is only valid with a mailbox selected (RFC 3501 section 6.4.1)"
		}
		if problem == "" && quoteOpen(line) {
			problem = openQuoteProblem
		}
		if long {
			problem = fmt.Sprintf("line longer than %d bytes", maxLine)
		}
		fc.depth = nil
		if problem == "" && (name == "SEARCH" || name == "UID SEARCH") {
			fc.depth = &searchDepth{}
			if fc.depth.line(string(line)); fc.depth.tooDeep() {
				problem = searchTooDeep
			}
		}
		if problem == "" && name == "STARTTLS" && (fc.startTLS != nil || fc.secure) {
			if err := fc.handleStartTLS(tag, line, authed); err != nil {
				return err
			}
			continue
		}
		if problem == "" {
			fc.mu.Lock()
			fc.tag, fc.name, fc.ended, fc.contReqs, fc.tooBig, fc.tooLong, fc.tooDeep, fc.openQuote = tag, name, false, 0, false, false, false, false
			fc.text = append(fc.text[:0], line...)
			if selecting(name) {
				fc.knownBefore, fc.known = fc.known, -1
			}
			fc.mu.Unlock()
			if err := fc.handOver(line, name, true); err != nil {
				return err
			}
			fc.size = len(fc.pending)
			return nil
		}
		// Refused: answer, and skip what the client sends for this
		// command without being asked (non-synchronizing literals).
		if !authed && fc.rejected == 0 && (httpRequest.Match(line) || long && httpMethod.Match(line) && httpVersion.Match(end)) {
			fc.reply("* BYE this is an IMAP server, not a web server")
			fc.Conn.Close()
			return errFramingClosed
		}
		fc.mu.Lock()
		fc.tag, fc.name, fc.ended, fc.contReqs = tag, "", true, 0
		fc.mu.Unlock()
		if tag == "" {
			tag = "*"
		}
		if err := fc.reply(tag + " BAD " + problem); err != nil {
			return err
		}
		if !authed {
			fc.rejected++
			if fc.rejected > maxRejectedBeforeLogin {
				fc.reply("* BYE too many lines that are not commands; closing the connection")
				fc.Conn.Close()
				return errFramingClosed
			}
		}
		// A literal announced at the end of a long line is dropped too:
		// its bytes were read as the next command.
		fc.literal(end)
		if err := fc.dropRest(); err != nil {
			return err
		}
	}
}

// handleStartTLS answers STARTTLS (RFC 9051 section 6.2.1) and, on OK,
// starts TLS under the framer: what the client sent after the command in
// the clear is taken as the start of the TLS handshake, never as a command
// (no command injection across the upgrade).
func (fc *frameConn) handleStartTLS(tag string, line []byte, authed bool) error {
	fc.mu.Lock()
	fc.tag, fc.name, fc.ended, fc.contReqs = tag, "STARTTLS", true, 0
	fc.mu.Unlock()
	switch {
	case !strings.EqualFold(strings.TrimRight(string(line), "\r\n")[len(tag):], " STARTTLS"):
		return fc.reply(tag + " BAD STARTTLS takes no arguments")
	case fc.secure:
		return fc.reply(tag + " BAD TLS is active already")
	case authed:
		return fc.reply(tag + " BAD STARTTLS is only allowed before login")
	}
	if err := fc.reply(tag + " OK Begin TLS negotiation now"); err != nil {
		return err
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	var clear net.Conn = fc.Conn
	if n := fc.br.Buffered(); n > 0 {
		early, _ := fc.br.Peek(n)
		clear = prefixConn{Conn: fc.Conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(early)), fc.Conn)}
	}
	upgraded := tls.Server(clear, fc.startTLS)
	fc.Conn = upgraded
	fc.upgraded.Store(upgraded)
	fc.br.Reset(fc.Conn)
	fc.secure, fc.startTLS = true, nil
	return nil
}

// prefixConn reads r, the bytes a bufio.Reader held and then the
// connection's, for a TLS handshake that starts in them.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// loginAllowed reports whether a login may be checked on this connection:
// over TLS, or in the clear where that is allowed (frameListener).
func (fc *frameConn) loginAllowed() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.secure || fc.cleartextLogin
}

// capabilityLine matches a capability list the library writes before
// login: the greeting's response code and the CAPABILITY response.
var capabilityLine = regexp.MustCompile(`^(\* OK \[CAPABILITY |\* CAPABILITY )([^\]\r\n]*)`)

// rewriteCapabilities adds STARTTLS to a capability list written before
// login while it is offered, and while a login needs TLS first puts
// LOGINDISABLED in place of the AUTH= mechanisms (RFC 9051 section 7.2.2).
// Called with mu held.
func (fc *frameConn) rewriteCapabilities(p []byte) []byte {
	if fc.authed || (fc.startTLS == nil && (fc.secure || fc.cleartextLogin)) {
		return p
	}
	m := capabilityLine.FindSubmatchIndex(p)
	if m == nil {
		return p
	}
	var caps []string
	for _, c := range strings.Fields(string(p[m[4]:m[5]])) {
		if !fc.secure && !fc.cleartextLogin && strings.HasPrefix(strings.ToUpper(c), "AUTH=") {
			continue
		}
		caps = append(caps, c)
	}
	if fc.startTLS != nil {
		caps = append(caps, "STARTTLS")
	}
	if !fc.secure && !fc.cleartextLogin {
		caps = append(caps, "LOGINDISABLED")
	}
	out := make([]byte, 0, len(p)+32)
	out = append(out, p[:m[4]]...)
	out = append(out, strings.Join(caps, " ")...)
	return append(out, p[m[5]:]...)
}

// parseCommandStart checks that line starts with a tag and the name of a
// command go-imap parses (RFC 9051 section 9, command), and returns them,
// or the reason it does not.
func parseCommandStart(line []byte) (tag, name, problem string) {
	s := strings.TrimRight(string(line), "\r\n")
	if strings.TrimSpace(s) == "" {
		return "", "", "empty line"
	}
	i := 0
	for i < len(s) && isAtomChar(s[i]) {
		i++
	}
	if i == 0 || strings.ContainsRune(s[:i], '+') {
		return "", "", "a command starts with a tag"
	}
	tag = s[:i]
	if i == len(s) || s[i] != ' ' {
		return tag, "", "a command name must follow the tag"
	}
	words := strings.SplitN(s[i+1:], " ", 3)
	name = strings.ToUpper(words[0])
	if name == "" || !isAtom(name) {
		return tag, "", "a command name must follow the tag"
	}
	if name == "UID" {
		if len(words) < 2 || !uidCommands[strings.ToUpper(words[1])] {
			return tag, "", "UID must be followed by FETCH, STORE, COPY, MOVE, SEARCH or EXPUNGE"
		}
		return tag, "UID " + strings.ToUpper(words[1]), ""
	}
	if !commands[name] {
		return tag, "", fmt.Sprintf("unknown command %s", name)
	}
	return tag, name, ""
}

// openQuoteProblem answers a command with a quoted string left open at the
// end of one of its lines.
const openQuoteProblem = "[CLIENTBUG] a quoted string does not end on its line " +
	"(RFC 9051 section 9: a quoted string holds no CR or LF); nothing was done"

// quoteOpen reports whether line, a line of a command (its first, or one
// after a literal), has a quoted string that a CR or the end of the line
// falls in: the grammar's quoted strings hold no CR or LF (RFC 9051
// section 9, QUOTED-CHAR), and go-imap's parser reads a quoted string on
// until its closing quote, across lines. The framer, which takes each
// line for a command of its own and a literal announced at a line's end
// for one, would then hand go-imap the client's next commands as the
// string, and bytes it passed as a literal's data, unread, as commands:
// `SELECT "x {23}` and then `"` CRLF `z1 CREATE Smuggled` CRLF as the
// literal created the mailbox, past every bound the framer keeps.
func quoteOpen(line []byte) bool {
	in := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case !in:
			in = c == '"'
		case c == '\r' || c == '\n':
			return true
		case c == '\\':
			i++
		case c == '"':
			in = false
		}
	}
	return in
}

// isAtomChar reports whether c may appear in a tag as go-imap parses it:
// an ATOM-CHAR (RFC 9051 section 9).
func isAtomChar(c byte) bool {
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return c > 0x1f && c < 0x7f
}

func isAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAtomChar(s[i]) {
			return false
		}
	}
	return true
}

// handOver makes line, a line of the command name (first: the line that
// starts it), the bytes to hand the library next: its literal noted, its
// mailbox names translated in UTF-8 mode (utf8names.go), a SEARCH's dates
// of days their months do not have written as valid ones (searchdate.go).
func (fc *frameConn) handOver(line []byte, name string, first bool) error {
	if first && (name == "SEARCH" || name == "UID SEARCH") {
		line = impossibleDates(line, name)
	}
	nameLiteral := false
	if fc.inUTF8() {
		line, nameLiteral = translateNames(line, name, first)
	}
	fc.pending = fc.literal(line)
	// An APPEND's first line that ends with a literal where the mailbox
	// goes: go-imap takes the name into the command, which it stops
	// reading at 50 KiB, and answered a name of 64 KB, after the framer
	// had asked for it, with NO [SERVERBUG] or BAD and the end of the
	// connection, or read its bytes as commands.
	fc.litName = first && name == "APPEND" && appendNameLiteral.Match(line)
	if nameLiteral && fc.litWait {
		var err error
		if fc.pending, err = fc.readNameLiteral(fc.pending); err != nil {
			return err
		}
	}
	return nil
}

// literal notes a literal announced at the end of line and returns the line
// to hand over, with a synchronizing announcement made non-synchronizing.
func (fc *frameConn) literal(line []byte) []byte {
	m := literalAt.FindSubmatchIndex(line)
	if m == nil {
		fc.more, fc.litSync = false, false
		return line
	}
	n, err := strconv.ParseInt(string(line[m[2]:m[3]]), 10, 64)
	if err != nil {
		// Beyond int64: no parser takes it; pass it on as it is.
		fc.more, fc.litSync = false, false
		return line
	}
	fc.lit, fc.litWait, fc.more = n, true, true
	fc.litSync = m[4] == m[5]
	if !fc.litSync {
		return line
	}
	out := make([]byte, 0, len(line)+1)
	out = append(out, line[:m[5]]...)
	out = append(out, '+')
	return append(out, line[m[5]:]...)
}

// appendNameLiteral matches an APPEND's first line that ends with its
// mailbox's literal.
var appendNameLiteral = regexp.MustCompile(`(?i)^[^ ]+ APPEND ~?\{[0-9]+\+?\} ?\r?\n$`)

// appendUTF8 matches the start of an APPEND's UTF8 data extension (RFC
// 6855 section 4), whose message literal a ")" follows.
var appendUTF8 = regexp.MustCompile(`(?i) UTF8 \(~\{[0-9]+\+?\} ?\r?\n$`)

// appendEnd reads what follows an APPEND's message literal, once the
// session has read the message and before it appends it, and returns it
// when it is not the end of the command (CRLF, or ")" CRLF after "UTF8
// (~{n}", RFC 9051 section 9 and RFC 6855), or "". go-imap
// (v2.0.0-beta.8, handleAppend) reads it only after Session.Append has
// appended the message, and when it is not that end, answers nothing at
// all: the message was in the log, the client waited for a reply that
// never came, and took the rest of the line for its next command (a
// second literal there ended the connection). Here, when the rest is
// something else, the library is handed the end it expects, so that it
// writes the session's refusal, and the rest, literals included, is
// dropped once the command is answered (dropRest). Not at that point
// (the library read on already), it leaves the rest to the library.
func (fc *frameConn) appendEnd() (string, error) {
	if fc.lit == 0 && fc.litWait && fc.more && len(fc.pending) == 0 && fc.litBuf == nil {
		// An empty message ({0}): the library reads none of its bytes,
		// so it has not asked the framer for them, nor for the "+" of a
		// synchronizing literal. Asked for the rest of the command after
		// the session appended, the framer handed it on, and text there
		// left the APPEND unanswered, its empty message appended.
		fc.litWait = false
		if fc.litSync {
			fc.litSync = false
			if err := fc.reply("+ Ready for literal data"); err != nil {
				return "", err
			}
		}
	}
	if fc.lit != 0 || fc.litWait || !fc.more || len(fc.pending) > 0 {
		return "", nil
	}
	fc.mu.Lock()
	end := ""
	if appendUTF8.Match(fc.text) {
		end = ")"
	}
	fc.mu.Unlock()
	line, lineEnd, long, err := fc.readLine()
	if err != nil {
		return "", err
	}
	if !long {
		rest := strings.TrimPrefix(strings.TrimPrefix(string(line), end), " ")
		if strings.HasPrefix(string(line), end) && (rest == "\r\n" || rest == "\n") {
			fc.pending = fc.literal(line)
			return "", nil
		}
	}
	fc.literal(lineEnd) // a literal it announces is dropped with the rest
	fc.pending = []byte(end + "\r\n")
	return strings.TrimRight(string(line), "\r\n"), nil
}

// dropRest reads and drops the rest of a command that was answered: the
// non-synchronizing literals and lines the client sends unasked. A
// synchronizing literal is never sent, since "+" never was.
func (fc *frameConn) dropRest() error {
	fc.litBuf = nil
	for fc.more {
		if fc.litSync {
			fc.lit, fc.litWait, fc.litSync, fc.more = 0, false, false, false
			return nil
		}
		if fc.lit > 0 {
			if _, err := io.CopyN(io.Discard, fc.br, fc.lit); err != nil {
				return err
			}
			fc.lit = 0
		}
		fc.litWait = false
		_, end, _, err := fc.readLine()
		if err != nil {
			return err
		}
		fc.literal(end)
	}
	fc.litWait = false
	return nil
}

// readLine reads one line, LF included. A line over maxLine is read to its
// end and dropped; long is then true, and line is its first maxLine bytes
// (without the LF), which hold its tag for the BAD reply. (Its end would
// give another tag, or a tag of the client's choice: the reply must carry
// the command's own, RFC 9051 section 7.1.3.) end is the end of the line,
// LF included: the line itself when it is not long, its last lineEndKeep
// bytes when it is, enough for a literal announcement (literalAt), whose
// bytes are dropped with the line's command rather than read as a
// command.
func (fc *frameConn) readLine() (line, end []byte, long bool, err error) {
	var buf []byte
	for {
		chunk, err := fc.br.ReadSlice('\n')
		switch {
		case long:
			end = append(end, chunk...)
			end = end[max(0, len(end)-lineEndKeep):]
		case len(buf)+len(chunk) <= maxLine:
			buf = append(buf, chunk...)
		default:
			long = true
			end = append(end, buf[max(0, len(buf)-lineEndKeep):]...)
			end = append(end, chunk...)
			end = end[max(0, len(end)-lineEndKeep):]
			buf = append(buf, chunk[:maxLine-len(buf)]...)
		}
		switch {
		case err == nil:
			if !long {
				end = buf
			}
			return buf, end, long, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			if err == io.EOF && len(buf) > 0 && !long {
				return buf, buf, false, nil
			}
			return nil, nil, long, err
		}
	}
}

// lineEndKeep is how much of the end of a long line readLine keeps: more
// than the longest literal announcement, ~{19 digits+} and CRLF.
const lineEndKeep = 32

// note keeps b as part of the command's text, for diagnose: not an
// APPEND's message, nor more than a bounded amount.
func (fc *frameConn) note(b []byte) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.name != "APPEND" && len(fc.text)+len(b) <= 2*maxLine {
		fc.text = append(fc.text, b...)
	}
}

// reply writes one line to the client.
func (fc *frameConn) reply(line string) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	_, err := fc.Conn.Write([]byte(line + "\r\n"))
	return err
}

// commandEnded reports whether the current command's tagged reply is
// written.
func (fc *frameConn) commandEnded() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.ended
}

// command returns the name of the command in progress ("LSUB", "UID FETCH").
func (fc *frameConn) command() string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.name
}

// asksFor reports whether the command in progress names item (an atom,
// case-insensitively) anywhere after its tag.
func (fc *frameConn) asksFor(item string) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, t := range tokens(fc.text) {
		if strings.EqualFold(t, item) {
			return true
		}
	}
	return false
}

// find returns the first match of re in the command's text, or "".
func (fc *frameConn) find(re *regexp.Regexp) string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return string(re.Find(fc.text))
}

// droppedKey returns the first search key of the command's text, with its
// argument, that go-imap would drop, or "": a BEFORE or SENTBEFORE whose
// date is 1-Jan-0001, which it parses into the zero time.Time, and a
// SMALLER or LARGER of 0; its SearchCriteria take a zero for "no such
// key". Dropped, a search for messages dated before the year 1 or smaller
// than 0 octets (none) would match every message, and NOT of it none.
func (fc *frameConn) droppedKey() string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	toks := tokens(fc.text)
	for i := 0; i+1 < len(toks); i++ {
		switch key := strings.ToUpper(toks[i]); key {
		case "BEFORE", "SENTBEFORE":
			if t, err := time.Parse("2-Jan-2006", toks[i+1]); err == nil && t.IsZero() {
				return key + " " + toks[i+1]
			}
		case "SMALLER", "LARGER":
			if n, err := strconv.ParseUint(toks[i+1], 10, 64); err == nil && n == 0 {
				return key + " " + toks[i+1]
			}
		}
	}
	return ""
}

// byeWriteTimeout bounds the write of a BYE the framer sends on its own.
const byeWriteTimeout = 5 * time.Second

// bye ends a connection the login guard let wait no longer: an untagged
// BYE with text if the output is between responses (it is, but for a
// moment, before login), then the connection closes, and with it the
// library's read of the next command.
func (fc *frameConn) bye(text string) {
	// Reads too, and before the lock: on a TLS connection whose
	// handshake has not ended, a write (the greeting, under the lock)
	// first waits for the handshake, which reads from the client; a
	// client that stalled it held the lock, and the connection, for
	// good, past the guard's limits (TestStalledTLSHandshakeEnded).
	fc.raw.SetDeadline(time.Now().Add(byeWriteTimeout))
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.outStart && fc.outSkip == 0 && !fc.holding && !fc.capturing {
		fc.Conn.Write([]byte("* BYE " + text + "\r\n"))
	}
	fc.Conn.Close()
}

// setSelected tells the framer whether a mailbox is selected: set by a
// SELECT or EXAMINE that succeeded, cleared by UNSELECT, CLOSE and the
// start of any SELECT or EXAMINE.
func (fc *frameConn) setSelected(on bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.selected = on
}

// loggedIn tells the framer a login succeeded, and starts the session's
// autologout timer of d (Config.Autologout); loggedOut, if set, is
// called when it ends the session.
func (fc *frameConn) loggedIn(d time.Duration, loggedOut func()) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.authed = true
	if fc.alarm.Load() != nil {
		return
	}
	fc.lastActive, fc.autologout, fc.loggedOut = time.Now(), d, loggedOut
	fc.alarm.Store(time.AfterFunc(d, fc.checkAutologout))
	if fc.closed.Load() {
		fc.alarm.Load().Stop()
	}
}

// checkAutologout is the autologout timer's (RFC 9051 section 5.4): a
// session that has sent no line for the autologout time, and is not
// waiting for a command's reply, gets an untagged BYE and is closed. A
// command in progress is no inactivity, but for IDLE (RFC 2177: the
// server may log out a client idling past its timeout), whose time
// counts from the line that started it; a client keeping IDLE re-issues
// it every 29 minutes. Otherwise the timer is set again for when the
// time will be up.
func (fc *frameConn) checkAutologout() {
	if fc.closed.Load() {
		return
	}
	fc.mu.Lock()
	d := fc.autologout
	busy := fc.name != "" && !fc.ended && fc.name != "IDLE"
	left := d - time.Since(fc.lastActive)
	fc.mu.Unlock()
	if busy || left > 0 {
		if busy {
			left = d
		}
		fc.alarm.Load().Reset(left)
		if fc.closed.Load() {
			fc.alarm.Load().Stop()
		}
		return
	}
	if fc.loggedOut != nil {
		fc.loggedOut()
	}
	fc.bye(fmt.Sprintf("autologout: no command for %v; closing the connection", d))
}

// Write passes the library's output on, noting continuation requests and
// the current command's tagged reply.
//
// go-imap answers a command whose mailbox name is not modified UTF-7, whose
// sequence set does not parse, whose lists nest too deep, or whose
// AUTHENTICATE initial response is not base64, with the "NO [SERVERBUG]
// Internal server error" it gives for its own failures; the framer puts the reason
// and the right response in its place (diagnose).
// The ESEARCH response to a SEARCH RETURN (SAVE) is dropped (saveAlone).
// While capture is on, the output is kept instead.
func (fc *frameConn) Write(p []byte) (int, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	n := len(p)
	if fc.capturing {
		fc.captured = append(fc.captured, p...)
		return n, nil
	}
	if s := fc.formSwap; s != nil && !s.done {
		var whole bool
		if p, whole = s.feed(p); !whole {
			return n, nil
		}
	}
	if fc.tag != "" && !fc.ended && string(p) == fc.tag+" NO [SERVERBUG] Internal server error\r\n" {
		if r := diagnose(fc.name, fc.text); r != "" {
			p = []byte(fc.tag + " " + r + "\r\n")
		}
	}
	if fc.tooBig && fc.tag != "" && !fc.ended && bytes.HasPrefix(p, []byte(fc.tag+" BAD ")) {
		p = []byte(fmt.Sprintf("%s NO [TOOBIG] Literals are limited to %d bytes for this command\r\n", fc.tag, maxBufferedLiteral))
	} else if fc.tooLong && fc.tag != "" && !fc.ended && bytes.HasPrefix(p, []byte(fc.tag+" BAD ")) {
		p = []byte(fmt.Sprintf("%s BAD [CLIENTBUG] command longer than %d bytes (literals excluded); nothing was done\r\n", fc.tag, maxLine))
	} else if fc.tooDeep && fc.tag != "" && !fc.ended && bytes.HasPrefix(p, []byte(fc.tag+" BAD ")) {
		p = []byte(fc.tag + " BAD " + searchTooDeep + "\r\n")
	} else if fc.openQuote && fc.tag != "" && !fc.ended && bytes.HasPrefix(p, []byte(fc.tag+" BAD ")) {
		p = []byte(fc.tag + " BAD " + openQuoteProblem + "\r\n")
	}
	if fc.outStart && fc.outSkip == 0 && !fc.ended && bytes.HasPrefix(p, []byte("* ESEARCH ")) &&
		(fc.name == "SEARCH" || fc.name == "UID SEARCH") && saveAlone.Match(fc.text) {
		fc.outDrop = true
	}
	if fc.outDrop {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return n, nil
		}
		fc.outDrop = false
		if p = p[i+1:]; len(p) == 0 {
			return n, nil
		}
	}
	if fc.utf8Names && fc.outStart && fc.outSkip == 0 && bytes.IndexByte(p, '\n') == len(p)-1 {
		p = unescapeNames(p)
	}
	p = fc.rewriteCapabilities(p)
	fc.watch(p)
	if fc.holding && len(p) < holdBytes {
		fc.held = append(fc.held, p...)
		if len(fc.held) < holdBytes {
			return n, nil
		}
		p, fc.held = fc.held, fc.held[:0]
	} else if fc.holding && len(fc.held) > 0 {
		// A block already (a piece of a literal): written as it is after
		// the held output, not copied into it. The piece of a message the
		// library passes on whole was copied here whole.
		if _, err := fc.Conn.Write(fc.held); err != nil {
			return 0, err
		}
		fc.held = fc.held[:0]
	}
	if _, err := fc.Conn.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// saveAlone is a SEARCH whose only result option is SAVE: it answers
// with no ESEARCH response (RFC 5182 section 2.1, and its first example),
// where go-imap writes one for every SEARCH with RETURN.
var saveAlone = regexp.MustCompile(`(?i)^[^ ]+ (UID )?SEARCH RETURN \(SAVE\)`)

// holdBytes is how much output hold gathers before it writes it out.
const holdBytes = 32 << 10

// holdWriteTimeout bounds release's write, as go-imap bounds its own.
const holdWriteTimeout = 30 * time.Second

// hold gathers what the library writes, from now until release, into
// blocks of holdBytes: a FETCH of many messages then costs a write to the
// socket per block rather than per message. Only the goroutine handling
// the command may call it, and only while that command writes nothing
// else that must reach the client before it ends.
func (fc *frameConn) hold() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.holding = true
}

// capture keeps what the library writes from now on, until endCapture
// returns it, so the session can complete a FETCH response before it goes
// out through Write (writeWide). Only the goroutine handling the command
// may call it, around one response.
func (fc *frameConn) capture() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.capturing = true
	fc.captured = nil
}

// endCapture ends capture and returns what the library wrote meanwhile.
func (fc *frameConn) endCapture() []byte {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	p := fc.captured
	fc.capturing, fc.captured = false, nil
	return p
}

// writeResponses writes p, whole untagged responses the session made
// itself: FETCH responses, with no tagged reply, continuation request,
// EXISTS or EXPUNGE among them, and every literal whole. While hold is on
// and the output is at the start of a line, p joins the held output as it
// is, without the look at every line Write takes (watch): nothing in it
// changes what watch keeps. Otherwise it goes through Write. With now, p
// goes out to the socket at once, after what hold gathered before it,
// instead of joining the held output until a block is full.
func (fc *frameConn) writeResponses(p []byte, now bool) error {
	fc.mu.Lock()
	if !fc.holding || !fc.outStart || fc.outSkip > 0 {
		fc.mu.Unlock()
		_, err := fc.Write(p)
		return err
	}
	defer fc.mu.Unlock()
	if len(fc.held) == 0 && (now || len(p) >= holdBytes) {
		// Written as it is, not copied first.
		return fc.writeHeld(p)
	}
	fc.held = append(fc.held, p...)
	if !now && len(fc.held) < holdBytes {
		return nil
	}
	err := fc.writeHeld(fc.held)
	fc.held = fc.held[:0]
	return err
}

// writeHeld writes p, held output, within holdWriteTimeout.
func (fc *frameConn) writeHeld(p []byte) error {
	fc.Conn.SetWriteDeadline(time.Now().Add(holdWriteTimeout))
	_, err := fc.Conn.Write(p)
	fc.Conn.SetWriteDeadline(time.Time{})
	return err
}

// release writes out what hold gathered and ends it.
func (fc *frameConn) release() error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.holding = false
	if len(fc.held) == 0 {
		return nil
	}
	p := fc.held
	fc.held = fc.held[:0]
	if cap(fc.held) > 2*holdBytes {
		fc.held = nil
	}
	return fc.writeHeld(p)
}

// watch looks at each response line written (literals skipped): the
// current command's tagged reply, continuation requests, and the EXISTS
// and EXPUNGE responses that tell the client how many messages the
// selected mailbox has.
func (fc *frameConn) watch(p []byte) {
	const keep = 64
	for len(p) > 0 {
		if fc.outSkip > 0 {
			k := min(fc.outSkip, int64(len(p)))
			fc.outSkip -= k
			p = p[k:]
			continue
		}
		if fc.outStart {
			fc.outPrefix, fc.outTail = fc.outPrefix[:0], fc.outTail[:0]
			fc.outStart = false
		}
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i+1]
		}
		if room := keep - len(fc.outPrefix); room > 0 {
			fc.outPrefix = append(fc.outPrefix, seg[:min(room, len(seg))]...)
		}
		fc.outTail = append(fc.outTail, seg[max(0, len(seg)-keep):]...)
		if len(fc.outTail) > keep {
			fc.outTail = fc.outTail[len(fc.outTail)-keep:]
		}
		p = p[len(seg):]
		if i < 0 {
			return
		}
		fc.outStart = true
		line := fc.outPrefix
		switch {
		case fc.tag != "" && len(line) > len(fc.tag) && line[len(fc.tag)] == ' ' && string(line[:len(fc.tag)]) == fc.tag:
			fc.ended = true
			fc.lastActive = time.Now()
			if selecting(fc.name) && !bytes.HasPrefix(line[len(fc.tag):], []byte(" OK")) {
				fc.known = fc.knownBefore
			}
			if fc.name == "UNAUTHENTICATE" && bytes.HasPrefix(line[len(fc.tag):], []byte(" OK")) {
				fc.utf8Names = false // RFC 8437 section 3: what was enabled is reset
			}
		case bytes.HasPrefix(line, []byte("+")) && (fc.name == "IDLE" || fc.name == "AUTHENTICATE"):
			fc.contReqs++
		case fc.name == "ENABLE" && bytes.HasPrefix(line, []byte("* ENABLED")):
			for _, c := range bytes.Fields(line[len("* ENABLED"):]) {
				if bytes.EqualFold(c, []byte("UTF8=ACCEPT")) || bytes.EqualFold(c, []byte("IMAP4rev2")) {
					fc.utf8Names = true
				}
			}
		}
		if !mayCount(line) {
			// Not an EXISTS or EXPUNGE response: skip the expression.
		} else if m := countLine.FindSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(string(m[1]), 10, 64)
			if string(m[2]) == "EXISTS" {
				fc.known = n
			} else if fc.known > 0 {
				fc.known--
			}
		}
		if !bytes.HasSuffix(fc.outTail, []byte("}\n")) && !bytes.HasSuffix(fc.outTail, []byte("}\r\n")) {
			// No literal announced at the end of the line.
		} else if m := literalAt.FindSubmatch(fc.outTail); m != nil {
			fc.outSkip, _ = strconv.ParseInt(string(m[1]), 10, 64)
		}
	}
}

// countLine is an EXISTS or EXPUNGE response (RFC 9051 sections 7.4.1,
// 7.5.1).
var countLine = regexp.MustCompile(`^\* ([0-9]{1,10}) (EXISTS|EXPUNGE)\r?\n$`)

// mayCount reports whether line can match countLine: it starts with "* "
// and ends with EXISTS or EXPUNGE and a line end. A FETCH of many
// messages writes a line per message, none of them one of these.
func mayCount(line []byte) bool {
	if len(line) < 4 || line[0] != '*' || line[1] != ' ' {
		return false
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return bytes.HasSuffix(line, []byte("EXISTS")) || bytes.HasSuffix(line, []byte("EXPUNGE"))
}

// knownMessages returns how many messages the client was told the
// selected mailbox has (-1: not known), from the EXISTS and EXPUNGE
// responses written since the SELECT or EXAMINE in progress or last done.
func (fc *frameConn) knownMessages() int64 {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.known
}

// framer returns the framer under a connection go-imap hands the session.
func framer(c net.Conn) *frameConn {
	for {
		switch v := c.(type) {
		case *frameConn:
			return v
		case *loginguard.Conn:
			c = v.Conn
		default:
			return nil
		}
	}
}

// seqSetRE is a sequence-set (RFC 9051 section 9); the numbers' range is
// checked apart.
var seqSetRE = regexp.MustCompile(`^([0-9]+|\*)(:([0-9]+|\*))?(,([0-9]+|\*)(:([0-9]+|\*))?)*$`)

func validSeqSet(s string) bool {
	if s == "$" {
		return true
	}
	if !seqSetRE.MatchString(s) {
		return false
	}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == ',' }) {
		if f == "*" {
			continue
		}
		if n, err := strconv.ParseUint(f, 10, 32); err != nil || n == 0 {
			return false
		}
	}
	return true
}

// diagnose names what in a command go-imap could not decode: lists nested
// deeper than its parser goes (BAD), an atom with 8-bit characters (BAD),
// a string that is not modified UTF-7 where a mailbox name may be (NO
// [CANNOT]), a sequence set that does not parse or a search key go-imap
// does not know (BAD). "" when it finds none of them.
func diagnose(name string, text []byte) string {
	if nesting(text) >= maxListDepth {
		return fmt.Sprintf("BAD [CLIENTBUG] lists nested more than %d deep", maxListDepth-1)
	}
	toks := tokens(text)
	if len(toks) > 0 {
		toks = toks[1:] // the tag
	}
	if name == "AUTHENTICATE" {
		// go-imap decodes the initial response (RFC 4959) itself, the
		// rest of the line after the mechanism and a space, and answers
		// a failure as its own: text after it, quotes or a literal too.
		line, _, _ := strings.Cut(string(text), "\n")
		f := strings.SplitN(strings.TrimSuffix(line, "\r"), " ", 4)
		if len(f) == 4 && f[3] != "=" {
			if _, err := base64.StdEncoding.DecodeString(f[3]); err != nil {
				return "BAD [CLIENTBUG] the initial response is not base64 (RFC 4959 section 3)"
			}
		}
	}
	if name == "APPEND" || name == "SEARCH" || name == "UID SEARCH" {
		if t := badDate(toks); t != "" {
			return fmt.Sprintf("BAD [CLIENTBUG] %q is not a valid date (RFC 9051 section 9)", t)
		}
	}
	if name == "APPEND" {
		if m := appendDate.FindSubmatch(text); m != nil {
			if _, err := time.Parse("_2-Jan-2006 15:04:05 -0700", string(m[1])); err != nil || !dateTimeRE.Match(m[1]) {
				return fmt.Sprintf("BAD [CLIENTBUG] %q is not a valid date-time (RFC 9051 section 9)", strings.ToValidUTF8(string(m[1]), "?"))
			}
		}
	}
	switch name {
	case "FETCH", "STORE", "COPY", "MOVE", "UID FETCH", "UID STORE", "UID COPY", "UID MOVE", "UID EXPUNGE":
		k := 1 + strings.Count(name, " ")
		if len(toks) > k && !validSeqSet(toks[k]) {
			return fmt.Sprintf("BAD [CLIENTBUG] %q is not a valid sequence set (RFC 9051 section 9)", toks[k])
		}
	case "SEARCH", "UID SEARCH":
		if k := 1 + strings.Count(name, " "); len(toks) >= k {
			set, key := searchProblem(toks[k:])
			if set != "" {
				return fmt.Sprintf("BAD [CLIENTBUG] %q is not a valid sequence set (RFC 9051 section 9)",
					strings.ToValidUTF8(set, "?"))
			}
			if key != "" {
				return fmt.Sprintf("BAD [CLIENTBUG] %q is not a search key this server knows (RFC 9051 section 6.4.4)",
					strings.ToValidUTF8(key, "?"))
			}
		}
	}
	// An atom is 7-bit (RFC 9051 section 9, ATOM-CHAR); go-imap stops
	// reading a mailbox name at an 8-bit byte and answered NO
	// [SERVERBUG] (GNU Mailutils sends a name from a URL as it is:
	// EXAMINE Archiv/Grüße). Dovecot answers BAD too.
	for _, a := range atoms(text) {
		if strings.IndexFunc(a, func(r rune) bool { return r >= 0x80 }) >= 0 {
			return fmt.Sprintf("BAD [CLIENTBUG] %q holds 8-bit characters, which an atom cannot (RFC 9051 section 9): "+
				"send it as a quoted string or in modified UTF-7 (RFC 3501 section 5.1.3)", strings.ToValidUTF8(a, "?"))
		}
	}
	for _, t := range toks {
		if !validMUTF7(t) {
			return fmt.Sprintf("NO [CANNOT] %q is not a valid mailbox name: not modified UTF-7 (RFC 3501 section 5.1.3) nor UTF-8",
				strings.ToValidUTF8(t, "?"))
		}
	}
	return ""
}

// searchKeyArgs is how many arguments each search key go-imap parses takes
// (RFC 9051 section 9, search-key; imapserver's readSearchKeyWithAtom).
// NOT and OR take search keys, which follow in the text as keys.
var searchKeyArgs = map[string]int{
	"ALL": 0, "ANSWERED": 0, "DELETED": 0, "DRAFT": 0, "FLAGGED": 0, "RECENT": 0, "SEEN": 0,
	"UNANSWERED": 0, "UNDELETED": 0, "UNDRAFT": 0, "UNFLAGGED": 0, "UNSEEN": 0,
	"NEW": 0, "OLD": 0, "$": 0, "NOT": 0, "OR": 0,
	"UID": 1, "KEYWORD": 1, "UNKEYWORD": 1, "BCC": 1, "CC": 1, "FROM": 1, "SUBJECT": 1, "TO": 1,
	"SINCE": 1, "BEFORE": 1, "ON": 1, "SENTSINCE": 1, "SENTBEFORE": 1, "SENTON": 1,
	"BODY": 1, "TEXT": 1, "LARGER": 1, "SMALLER": 1,
	"HEADER": 2,
}

// searchReturnOpts are the SEARCH RETURN options go-imap takes (RFC 4731,
// RFC 5182).
var searchReturnOpts = map[string]bool{"MIN": true, "MAX": true, "ALL": true, "COUNT": true, "SAVE": true}

// searchProblem walks a SEARCH's arguments (toks, after the command's
// name) as keys and their arguments, and returns the first sequence set
// that does not parse, where a key or UID's argument goes, or the first
// token standing where a key goes that is neither a key go-imap knows nor
// a sequence set, whichever comes first; "" for none. go-imap takes such a word for a
// sequence set that does not parse and answers NO [SERVERBUG]. Other
// arguments are not looked at: a date or a subject may start with a
// digit (SENTON 1-Jan-2020 was named as a sequence set that does not
// parse). Parentheses are not among toks: a list's keys are walked as
// keys in turn.
func searchProblem(toks []string) (set, key string) {
	i := 0
	if i < len(toks) && strings.EqualFold(toks[i], "RETURN") {
		for i++; i < len(toks) && searchReturnOpts[strings.ToUpper(toks[i])]; i++ {
		}
	}
	if i < len(toks) && strings.EqualFold(toks[i], "CHARSET") {
		i += 2
	}
	isSet := func(t string) bool { return t == "" || t[0] >= '0' && t[0] <= '9' || t[0] == '*' }
	for i < len(toks) {
		t := toks[i]
		n, ok := searchKeyArgs[strings.ToUpper(t)]
		switch {
		case ok && strings.EqualFold(t, "UID") && i+1 < len(toks) && !validSeqSet(toks[i+1]):
			return toks[i+1], ""
		case ok:
			i += 1 + n
		case isSet(t) && t != "" && !validSeqSet(t):
			return t, ""
		case isSet(t):
			i++
		default:
			return "", t
		}
	}
	return "", ""
}

// appendDate finds the date-time argument of an APPEND whose mailbox is
// an atom or a quoted string: the quoted string after it and its flag
// list. go-imap answers NO [SERVERBUG] to one that does not parse, whatever
// its shape ("", "garbage", "1-Jan-2020").
var appendDate = regexp.MustCompile(`(?i)^[^ ]+ APPEND (?:"(?:[^"\\\r\n]|\\.)*"|[^ "({\r\n]+) (?:\([^)\r\n]*\) )?"([^"\r\n]*)"`)

// dateRE and dateTimeRE are the shapes of a date (SEARCH) and a date-time
// (APPEND), RFC 9051 section 9, with a day of one or two digits.
var (
	dateRE = regexp.MustCompile(`^[0-9]{1,2}-[A-Za-z]{3}-[0-9]{4}$`)
	// dateKeys are the search keys whose argument is a date.
	dateKeys   = map[string]bool{"BEFORE": true, "ON": true, "SINCE": true, "SENTBEFORE": true, "SENTON": true, "SENTSINCE": true}
	dateTimeRE = regexp.MustCompile(`^ ?[0-9]{1,2}-[A-Za-z]{3}-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$`)
)

// badDate returns the first token shaped as a date or a date-time that
// names no time (the 32nd of January, the 29th of February 2023, 24:00,
// a second 60, a zone of +0099), or "". go-imap answers such a command
// NO [SERVERBUG].
func badDate(toks []string) string {
	for i, t := range toks {
		if i > 0 && dateKeys[strings.ToUpper(toks[i-1])] && !dateRE.MatchString(t) && !dateTimeRE.MatchString(t) {
			// A date key's argument in no date's form (1-Jan-1,
			// 001-Jan-2020): go-imap's parser fails on it as on its own
			// bug.
			return t
		}
		var err error
		switch {
		case dateRE.MatchString(t):
			_, err = time.Parse("2-Jan-2006", t)
		case dateTimeRE.MatchString(t):
			_, err = time.Parse("_2-Jan-2006 15:04:05 -0700", t)
		default:
			continue
		}
		if err != nil {
			return t
		}
	}
	return ""
}

// maxListDepth is the depth of nested parenthesized lists at which go-imap's
// parser gives up (imapwire's maxListDepth) and answers NO [SERVERBUG].
const maxListDepth = 1000

// nesting returns how deep a command's text nests parenthesized lists,
// outside quoted strings and literals.
func nesting(text []byte) int {
	depth, deepest := 0, 0
	s := string(text)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
			deepest = max(deepest, depth)
		case ')':
			depth = max(depth-1, 0)
		case '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		case '{', '~':
			if m := literalStart.FindStringSubmatch(s[i:]); m != nil {
				n, _ := strconv.Atoi(m[1])
				i += len(m[0]) + n - 1
			}
		}
	}
	return deepest
}

// tokens splits a command's text into its atoms, quoted strings
// (unquoted) and literals (their contents), leaving out parentheses.
func tokens(text []byte) []string { return scanTokens(text, true) }

// atoms is tokens without the quoted strings and literals: the words the
// command has outside its strings.
func atoms(text []byte) []string { return scanTokens(text, false) }

func scanTokens(text []byte, strs bool) []string {
	var out []string
	for _, t := range spanTokens(string(text), true) {
		if strs || !(t.quoted || t.literal) {
			out = append(out, t.text)
		}
	}
	return out
}

// spanToken is a token of a command's text and where it is: an atom, a
// quoted string (its text unquoted) or a literal (its contents, or
// nothing when the scan stopped at it).
type spanToken struct {
	text            string
	from, to        int
	quoted, literal bool
}

// spanTokens splits s into its atoms, quoted strings and literals,
// leaving out parentheses, and keeps where each token is. With
// intoLiterals false it stops at the first literal, whose token then
// holds nothing: what follows on a command's first line is not its own.
func spanTokens(s string, intoLiterals bool) []spanToken {
	var out []spanToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '(' || c == ')' || c == '\r' || c == '\n':
			i++
		case c == '"':
			var b strings.Builder
			from := i
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			i++
			out = append(out, spanToken{text: b.String(), from: from, to: min(i, len(s)), quoted: true})
		case c == '{' || c == '~':
			m := literalStart.FindStringSubmatch(s[i:])
			if m == nil {
				i++
				continue
			}
			if !intoLiterals {
				return append(out, spanToken{from: i, to: len(s), literal: true})
			}
			n, _ := strconv.Atoi(m[1])
			start := i + len(m[0])
			end := min(start+n, len(s))
			out = append(out, spanToken{text: s[start:end], from: i, to: end, literal: true})
			i = end
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" ()\"\r\n", rune(s[j])) {
				j++
			}
			out = append(out, spanToken{text: s[i:j], from: i, to: j})
			i = j
		}
	}
	return out
}

// selecting reports whether the command changes the selected mailbox (or
// leaves it) when it succeeds.
func selecting(name string) bool {
	return name == "SELECT" || name == "EXAMINE" || name == "CLOSE" || name == "UNSELECT"
}
