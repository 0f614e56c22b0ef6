package submit

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// HeaderEnd returns the offset of msg's body: just past the blank line
// that ends the header (a line of CRLF or of a bare LF alone), or len(msg)
// when there is none.
func HeaderEnd(msg []byte) int {
	for off := 0; off < len(msg); {
		nl := bytes.IndexByte(msg[off:], '\n')
		if nl < 0 {
			return len(msg)
		}
		line := msg[off : off+nl+1]
		off += nl + 1
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return off
		}
	}
	return len(msg)
}

// StripBcc returns msg without its Bcc header fields (with their
// continuation lines), byte for byte otherwise: what is relayed, since
// blind recipients are told only by the envelope. msg itself is returned
// when it has no Bcc field.
func StripBcc(msg []byte) []byte {
	end := HeaderEnd(msg)
	var out []byte
	skipping := false
	last := 0 // start of the bytes not yet copied
	for off := 0; off < end; {
		nl := bytes.IndexByte(msg[off:end], '\n')
		next := end
		if nl >= 0 {
			next = off + nl + 1
		}
		line := msg[off:next]
		continuation := len(line) > 0 && (line[0] == ' ' || line[0] == '\t')
		if !continuation {
			name, _, ok := bytes.Cut(line, []byte(":"))
			skipping = ok && strings.EqualFold(strings.TrimRight(string(name), " \t"), "bcc")
			if skipping && out == nil {
				out = make([]byte, 0, len(msg))
			}
		}
		if skipping {
			out = append(out, msg[last:off]...)
			last = next
		}
		off = next
	}
	if out == nil {
		return msg
	}
	return append(out, msg[last:]...)
}

// ParseHeader reads a message's header as go-message does (the mail store
// parses with the same library, so a Message-ID compares equal).
func ParseHeader(msg []byte) (mail.Header, error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg[:HeaderEnd(msg)])))
	if err != nil {
		return mail.Header{}, err
	}
	return mail.Header{Header: message.Header{Header: h}}, nil
}

// MessageID returns msg's Message-ID without angle brackets, or "" when it
// has none or its header does not parse.
func MessageID(msg []byte) string {
	h, err := ParseHeader(msg)
	if err != nil {
		return ""
	}
	id, err := h.MessageID()
	if err != nil {
		return ""
	}
	return id
}

// errNoFrom: the message has no From field.
var errNoFrom = errors.New("the message has no From header field")

// authors returns the addresses of the From field and of the Sender field.
func authors(h mail.Header) ([]string, error) {
	if !h.Has("From") {
		return nil, errNoFrom
	}
	var out []string
	for _, name := range []string{"From", "Sender"} {
		if !h.Has(name) {
			continue
		}
		// Only the first field is read below, and readers differ in which
		// one they show: a second From would pass any address off as the
		// author (RFC 5322 section 3.6: at most one of each).
		if n := len(h.Values(name)); n > 1 {
			return nil, fmt.Errorf("the message has %d %s header fields, where one is allowed (RFC 5322 section 3.6)", n, name)
		}
		list, err := h.AddressList(name)
		if err != nil {
			return nil, fmt.Errorf("the %s header field does not parse: %w", name, err)
		}
		if len(list) == 0 {
			return nil, fmt.Errorf("the %s header field holds no address", name)
		}
		for _, a := range list {
			out = append(out, a.Address)
		}
	}
	return out, nil
}

// completeHeader adds, at the top of the header, the Message-ID and Date
// fields msg lacks (RFC 6409 section 8.3). It returns the message and its
// Message-ID.
func completeHeader(msg []byte, h mail.Header, hostname string, now time.Time) ([]byte, string, error) {
	var add []byte
	id, err := h.MessageID()
	if err != nil || id == "" {
		if h.Has("Message-Id") {
			return nil, "", fmt.Errorf("the Message-ID header field does not parse")
		}
		var r [16]byte
		rand.Read(r[:])
		id = hex.EncodeToString(r[:]) + "@" + hostname
		add = fmt.Appendf(add, "Message-ID: <%s>\r\n", id)
	}
	if !h.Has("Date") {
		add = fmt.Appendf(add, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if len(add) == 0 {
		return msg, id, nil
	}
	return append(add, msg...), id, nil
}
