package imapd

import (
	"bytes"
	"io"
	"strconv"
)

// Mailbox names in UTF-8 mode. Once a client has enabled UTF8=ACCEPT (RFC
// 6855 section 3) or IMAP4rev2 (RFC 9051 section 5.1), it spells mailbox
// names in UTF-8, where "&" is an ordinary character. go-imap v2.0.0-beta.8
// still decodes every name it reads as modified UTF-7 and writes "&" as
// "&-" in that mode: Thunderbird (which enables UTF8=ACCEPT) was shown the
// mailbox "Tom & Jerry" as "Tom &- Jerry", and CREATE "Rock & Roll" was
// refused as not modified UTF-7. The framer translates both ways for such
// a session:
//
//   - in the mailbox arguments of the commands that take names, every "&"
//     the client sends becomes "&-" before the library reads it (a name
//     sent as a literal is read here first, translated, and handed over
//     with its new length);
//   - in the LIST, LSUB and STATUS responses, every "&-" in a quoted string
//     becomes "&" again. The library writes a name there quoted (names
//     are at most 1,000 bytes and hold no control characters), and in
//     those responses only names are quoted strings that may hold "&".
//
// A session is in UTF-8 mode from the "* ENABLED" response that names
// either capability until a successful UNAUTHENTICATE, which resets what
// was enabled (RFC 8437 section 3).

// nameCommands are the commands whose arguments, after the command name,
// are all mailbox names or hold no "&" otherwise: select and create
// parameters, STATUS items, LIST options and sequence sets are atoms
// without it. APPEND is apart: only its first argument is a name, and its
// flags may be keywords holding "&".
var nameCommands = map[string]bool{
	"SELECT": true, "EXAMINE": true, "CREATE": true, "DELETE": true, "RENAME": true,
	"SUBSCRIBE": true, "UNSUBSCRIBE": true, "STATUS": true, "LIST": true, "LSUB": true,
	"COPY": true, "MOVE": true, "UID COPY": true, "UID MOVE": true,
}

// inUTF8 reports whether the session spells names in UTF-8.
func (fc *frameConn) inUTF8() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.utf8Names
}

// translateNames returns line, a line of the command in progress (first:
// the line that starts it), with the "&" of its mailbox names spelled
// "&-" for the library, and whether the literal it announces, if any, is
// a mailbox name.
func translateNames(line []byte, name string, first bool) (out []byte, nameLiteral bool) {
	args := 0
	if first {
		args = argsStart(line, name)
		if args < 0 {
			return line, false
		}
	}
	lit := literalAt.FindIndex(line)
	if name != "APPEND" {
		if !nameCommands[name] {
			return line, false
		}
		return escapeAmp(line, args, len(line)), lit != nil && line[lit[0]] != '~'
	}
	if !first {
		return line, false // after the name: flags, date and the message
	}
	// APPEND's first argument: a quoted string, a literal, or an atom.
	switch {
	case args < len(line) && line[args] == '"':
		end := args + 1
		for end < len(line) && line[end] != '"' {
			if line[end] == '\\' {
				end++
			}
			end++
		}
		return escapeAmp(line, args, min(end, len(line))), false
	case lit != nil && lit[0] == args && line[args] == '{':
		return line, true
	default:
		end := args
		for end < len(line) && line[end] != ' ' && line[end] != '\r' && line[end] != '\n' {
			end++
		}
		return escapeAmp(line, args, end), false
	}
}

// argsStart returns where the arguments of a command's first line start,
// after its tag and name ("UID" and the command after it), or -1 if the
// line has none.
func argsStart(line []byte, name string) int {
	i := 0
	words := 2
	if len(name) > 4 && name[:4] == "UID " {
		words = 3
	}
	for w := 0; w < words; w++ {
		sp := bytes.IndexByte(line[i:], ' ')
		if sp < 0 {
			return -1
		}
		i += sp + 1
	}
	return i
}

// escapeAmp returns b with every "&" in b[from:to] spelled "&-".
func escapeAmp(b []byte, from, to int) []byte {
	n := bytes.Count(b[from:to], []byte("&"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	out = append(out, b[:from]...)
	for _, c := range b[from:to] {
		out = append(out, c)
		if c == '&' {
			out = append(out, '-')
		}
	}
	return append(out, b[to:]...)
}

// readNameLiteral reads now the literal that line, a line handed to the
// library, announces as a mailbox name (fc.literal has noted it), asking
// for it first if it is synchronizing, and keeps it translated for the
// library in fc.litBuf; it returns line with the literal's new length.
// Read hands the literal over when the library asks for it, or drops it
// with the command if the library answered before.
func (fc *frameConn) readNameLiteral(line []byte) ([]byte, error) {
	if fc.lit > maxBufferedLiteral {
		return line, nil // refused as too big (Read), not translated
	}
	if fc.litSync {
		if err := fc.reply("+ Ready for literal data"); err != nil {
			return nil, err
		}
		fc.litSync = false
	}
	raw := make([]byte, fc.lit)
	if _, err := io.ReadFull(fc.br, raw); err != nil {
		return nil, err
	}
	esc := escapeAmp(raw, 0, len(raw))
	if len(esc) > maxBufferedLiteral {
		esc = raw // the library would refuse the longer one; it refuses the name
	}
	fc.litBuf, fc.lit = esc, 0
	m := literalAt.FindSubmatchIndex(line)
	out := make([]byte, 0, len(line)+4)
	out = append(out, line[:m[2]]...)
	out = strconv.AppendInt(out, int64(len(esc)), 10)
	return append(out, line[m[3]:]...), nil
}

// nameResponses are the responses whose quoted strings are mailbox names.
var nameResponses = [][]byte{[]byte("* LIST "), []byte("* LSUB "), []byte("* STATUS ")}

// unescapeNames returns p, one whole response line, with "&-" spelled "&"
// in its quoted strings if it is a LIST, LSUB or STATUS response.
func unescapeNames(p []byte) []byte {
	if !bytes.Contains(p, []byte("&-")) {
		return p
	}
	ok := false
	for _, r := range nameResponses {
		ok = ok || bytes.HasPrefix(p, r)
	}
	if !ok {
		return p
	}
	out := make([]byte, 0, len(p))
	quoted := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case quoted && c == '\\' && i+1 < len(p):
			out = append(out, c, p[i+1])
			i++
			continue
		case c == '"':
			quoted = !quoted
		case quoted && c == '&' && i+1 < len(p) && p[i+1] == '-':
			i++
		}
		out = append(out, c)
	}
	return out
}
