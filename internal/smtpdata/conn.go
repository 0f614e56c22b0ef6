package smtpdata

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
)

// Conn is the connection go-smtp reads from. It hands the library at most
// one line per Read, so the library never holds bytes past the line it is
// working on: when that line is DATA, the message that follows is still
// here, and the session reads it with a Reader (ReadData) instead of the
// library's reader. The library is then given the bare end marker
// ".\r\n", which its reader takes for an empty rest of the message.
//
// A BDAT chunk (RFC 3030) is go-smtp's to read: Conn hands it over as it
// comes, and a connection that ends inside it is io.ErrUnexpectedEOF, not
// io.EOF, which go-smtp's io.Copy from an io.LimitReader took for the
// chunk's end: a message cut short was handed to the session as if whole.
//
// Only one goroutine reads at a time: go-smtp reads the command lines, and
// while it waits for the replies to DATA the session reads the message.
type Conn struct {
	net.Conn
	br *bufio.Reader

	tail []byte // handed to the library before anything else
	err  error  // sticky: the message could not be read to its end

	// Read state, used by the library's reading goroutine only.
	midLine bool  // the last line handed over did not end in LF
	chunk   int64 // bytes of a BDAT chunk the library is still to read
}

// dataEnd is what the library reads after the session has read a message.
var dataEnd = []byte(".\r\n")

// NewConn wraps c.
func NewConn(c net.Conn) *Conn {
	return &Conn{Conn: c, br: bufio.NewReaderSize(c, 16<<10)}
}

// Read implements net.Conn, one line at most.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.tail) > 0 {
		n := copy(p, c.tail)
		c.tail = c.tail[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.br.Buffered() == 0 {
		if _, err := c.br.Peek(1); err != nil {
			if err == io.EOF && c.chunk > 0 {
				// The connection ended inside a BDAT chunk. go-smtp
				// reads a chunk with io.Copy from an io.LimitReader,
				// which takes an early io.EOF for the chunk's end: the
				// message cut short was handed to the session whole,
				// after BDAT n LAST, and delivered or queued.
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	if c.chunk > 0 {
		buf, _ := c.br.Peek(int(min(int64(len(p)), int64(c.br.Buffered()), c.chunk)))
		n := copy(p, buf)
		_, _ = c.br.Discard(n)
		c.chunk -= int64(n)
		return n, nil
	}
	buf, _ := c.br.Peek(min(len(p), c.br.Buffered()))
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
	}
	n := copy(p, buf)
	_, _ = c.br.Discard(n)
	whole := !c.midLine && n > 0 && p[n-1] == '\n'
	c.midLine = n > 0 && p[n-1] != '\n'
	if whole {
		c.chunk = bdatSize(p[:n])
	}
	return n, nil
}

// InChunk reports whether the next bytes are a BDAT chunk's, which go-smtp
// reads as data, not as a command line.
func (c *Conn) InChunk() bool { return c.chunk > 0 }

// bdatSize returns the size of the chunk a command line announces that
// go-smtp v0.25.1 reads (or discards) after it, the BDAT of RFC 3030
// parsed as its handleBdat does, or 0.
func bdatSize(line []byte) int64 {
	verb, arg, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
	if !strings.EqualFold(verb, "BDAT") {
		return 0
	}
	args := strings.Fields(arg)
	if len(args) == 0 || len(args) > 2 || len(args) == 2 && !strings.EqualFold(args[1], "LAST") {
		return 0
	}
	size, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		return 0
	}
	return int64(size)
}

// errDataUnfinished: the session returned before the end of the message.
var errDataUnfinished = errors.New("smtp data: message not read to its end")

// ReadData returns a reader of the message that follows DATA. Once it has
// been read to its end (io.EOF or an error), DoneData must be called before
// the library reads again.
func (c *Conn) ReadData() *Reader { return NewReader(c.br) }

// DoneData prepares the connection for the library after the message: the
// end marker if the message was read to its end, else the read error for
// good (the rest of the stream is no longer in step with the commands).
func (c *Conn) DoneData(r *Reader) {
	switch r.err {
	case io.EOF:
		c.tail = dataEnd
	case nil:
		c.err = errDataUnfinished
	default:
		c.err = r.err
	}
}

// StartTLS puts TLS under the connection with cfg (RFC 3207), once the
// "220" to STARTTLS is written: what the client sent after the command in
// the clear is taken as the start of the TLS handshake, never as a
// command (no command injection across the upgrade). The handshake runs
// at the next read or write.
func (c *Conn) StartTLS(cfg *tls.Config) {
	var clear net.Conn = c.Conn
	if n := c.br.Buffered(); n > 0 {
		early, _ := c.br.Peek(n)
		clear = prefixConn{Conn: c.Conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(early)), c.Conn)}
	}
	c.Conn = tls.Server(clear, cfg)
	c.br.Reset(c.Conn)
}

// prefixConn reads r: the bytes a bufio.Reader held, then the
// connection's.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }
