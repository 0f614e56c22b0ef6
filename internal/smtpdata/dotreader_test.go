package smtpdata

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"cspool/internal/smtpdata/smtpdatatest"
)

// decodeLines is the DATA decoding of RFC 5321 section 4.5.2 written line
// by line, as the reference for Reader: split at each CRLF; the line
// "." ends the data; a line starting with "." loses it. ok is false when
// the input ends before the line ".".
func decodeLines(in []byte) (msg []byte, used int, ok bool) {
	msg = []byte{}
	for {
		i := bytes.Index(in[used:], []byte("\r\n"))
		if i < 0 {
			return msg, used, false
		}
		line := in[used : used+i+2]
		used += i + 2
		if string(line) == ".\r\n" {
			return msg, used, true
		}
		msg = append(msg, bytes.TrimPrefix(line, []byte("."))...)
	}
}

// readers are the ways a test feeds Reader: whole, one byte per read
// into the smallest bufio.Reader, and half reads.
var readers = []struct {
	name string
	make func(in []byte) *bufio.Reader
	step int // bytes asked for per Read
}{
	{"whole", func(in []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(in)) }, 64 << 10},
	{"one byte at a time", func(in []byte) *bufio.Reader {
		return bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), 16)
	}, 3},
	{"half reads", func(in []byte) *bufio.Reader { return bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(in)), 16) }, 7},
}

// decodeDot reads br with a Reader in reads of step bytes.
func decodeDot(br *bufio.Reader, step int) ([]byte, error) {
	r := NewReader(br)
	out := []byte{}
	p := make([]byte, step)
	for {
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, errors.New("Read returned 0 bytes and no error")
		}
	}
}

// checkDot compares Reader with decodeLines on in, followed by bytes
// that belong to the next command and must be left unread.
func checkDot(t *testing.T, in []byte) {
	t.Helper()
	after := []byte("NOOP\r\n")
	want, used, ok := decodeLines(in)
	for _, rd := range readers {
		full := append(append([]byte{}, in...), after...)
		br := rd.make(full)
		got, err := decodeDot(br, rd.step)
		if !ok {
			// The end may lie in the bytes that follow; only the input
			// itself is checked.
			br = rd.make(in)
			if _, err := decodeDot(br, rd.step); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%s: input %q without the end: error %v, want io.ErrUnexpectedEOF", rd.name, in, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: input %q: error %v, want the end of the data", rd.name, in, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: input %q decoded to %q, want %q", rd.name, in, got, want)
		}
		rest, _ := io.ReadAll(br)
		if wantRest := full[used:]; !bytes.Equal(rest, wantRest) {
			t.Fatalf("%s: input %q left %q unread, want %q", rd.name, in, rest, wantRest)
		}
	}
}

func TestDotReaderLineEnds(t *testing.T) {
	for _, c := range smtpdatatest.LineEndCases() {
		want, _, ok := decodeLines([]byte(c.Wire))
		if !ok || string(want) != c.Want {
			t.Fatalf("%s: the reference decodes %q to %q (end found: %v), want %q", c.Name, c.Wire, want, ok, c.Want)
		}
		checkDot(t, []byte(c.Wire))
	}
	for _, in := range []string{"", "a", "a\r", "a\r\n", "a\r\n.", "a\r\n.\r", ".", ".\r", "a\r\n..\r\n", "a\n.\n"} {
		checkDot(t, []byte(in))
	}
}

// FuzzDotReader checks Reader against decodeLines on any input, and that
// any message dot-stuffed by the sender's rules comes back whole.
func FuzzDotReader(f *testing.F) {
	for _, c := range smtpdatatest.LineEndCases() {
		if len(c.Wire) < 4096 {
			f.Add([]byte(c.Wire))
		}
	}
	f.Add([]byte("a\r\r\r\r\n..\r\r\n.\r\r\n.\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkDot(t, in)
		wire := smtpdatatest.DotStuff(in)
		want := in
		if !bytes.HasSuffix(in, []byte("\r\n")) { // dotStuff ends it as a client would
			want = append(append([]byte{}, in...), "\r\n"...)
		}
		got, err := decodeDot(bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader([]byte(wire))), 16), 5)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("message %q sent as %q came back as %q (%v), want %q", in, wire, got, err, want)
		}
	})
}
