package mimeform

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// headerBomb returns n header fields "X-Hi: v", each a line.
func headerBomb(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-H%d: v\r\n", i)
	}
	return b.String()
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHeaderBombsBounded: a message whose header (its own, a part's, a
// nested message's) has 400,000 fields, 5.5 MB, is parsed, indexed and
// searched with an allocation of a few times its size, as any message,
// where the MIME library's whole parse of such a header allocated about
// 40 times it (over 200 MB) and held most of it at once. The message keeps
// its bytes and its header's length; its envelope comes from the fields
// within the bounds; its structure is the fallback (one text part).
func TestHeaderBombsBounded(t *testing.T) {
	bomb := headerBomb(400000)
	cases := []struct {
		name, msg  string
		subject    string // the envelope's
		textHolds  string // BodyTexts's text holds it
		fieldsTop  int    // fields ParseHeader gives of the top header
		wantStatus Status
	}{
		{"the message's header",
			"Subject: first\r\nFrom: a@example.org\r\n" + bomb + "Subject: late\r\n\r\nthe body\r\n",
			"first", "the body", MaxHeaderFields, Simplified},
		{"a part's header",
			"Subject: part\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
				"--b\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n" +
				"--b\r\nContent-Type: text/plain\r\n" + bomb + "\r\nsecond part\r\n--b--\r\n",
			"part", "second part", 3, Simplified},
		{"a nested message's header",
			"Subject: nested\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" +
				"Subject: inner\r\n" + bomb + "\r\ninner body\r\n",
			"nested", "inner body", 3, Simplified},
		{"a continued field",
			"Subject: folded\r\nX-Long: a" + strings.Repeat("\r\n b", 2_500_000) + "\r\n\r\nbody\r\n",
			"folded", "body", 1, Simplified},
		{"a part's parameters",
			"Subject: params\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
				"--b\r\nContent-Type: application/octet-stream" + paramBomb(150000) + "\r\n\r\nfirst part\r\n" +
				"--b\r\nContent-Type: text/plain\r\n\r\nsecond part\r\n--b--\r\n",
			"params", "second part", 3, Simplified},
		{"the message's parameters",
			"Subject: top\r\nMIME-Version: 1.0\r\nContent-Type: text/plain" + paramBomb(150000) + "\r\n\r\nthe body\r\n",
			"top", "the body", 2, Simplified},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := []byte(c.msg)
			var m Message
			var err error
			parsed := allocated(func() { m, err = Parse(raw) })
			if err != nil {
				t.Fatal(err)
			}
			if m.Status != c.wantStatus {
				t.Errorf("status %d, want %d", m.Status, c.wantStatus)
			}
			if want := int64(headerLength(raw)); m.HeaderLen != want {
				t.Errorf("header length %d, want %d", m.HeaderLen, want)
			}
			env, err := DecodeEnvelope(m.Envelope)
			if err != nil {
				t.Fatal(err)
			}
			if env.Subject != c.subject {
				t.Errorf("envelope's subject %q, want %q", env.Subject, c.subject)
			}
			var texts []string
			searched := allocated(func() { texts = BodyTexts(raw, m.HeaderLen) })
			if !strings.Contains(strings.Join(texts, "\n"), c.textHolds) {
				t.Errorf("BodyTexts lack %q", c.textHolds)
			}
			fields := 0
			headed := allocated(func() {
				h := ParseHeader(raw[:m.HeaderLen])
				for f := h.Fields(); f.Next(); {
					fields++
				}
			})
			if fields != c.fieldsTop {
				t.Errorf("ParseHeader gave %d fields, want %d", fields, c.fieldsTop)
			}
			limit := uint64(8*len(raw)) + 16<<20
			t.Logf("%d bytes: Parse allocated %d, BodyTexts %d, ParseHeader %d", len(raw), parsed, searched, headed)
			for what, n := range map[string]uint64{"Parse": parsed, "BodyTexts": searched, "ParseHeader": headed} {
				if n > limit {
					t.Errorf("%s allocated %d bytes for a message of %d, want at most %d", what, n, len(raw), limit)
				}
			}
		})
	}
}

// paramBomb is n RFC 2231 continuations of one parameter, one a line.
func paramBomb(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, ";\r\n name*%d=\"s%d\"", i, i)
	}
	return b.String()
}

// TestBoundedHeader: a header within the bounds is given back as it is;
// one beyond them is cut before the first field that goes beyond them,
// continuation lines staying with their field, and ended with a blank
// line.
func TestBoundedHeader(t *testing.T) {
	within := "A: 1\r\nB: 2\r\n\r\nbody"
	if got, ok := BoundedHeader([]byte(within)); !ok || string(got) != "A: 1\r\nB: 2\r\n\r\n" {
		t.Errorf("within: %q, %v", got, ok)
	}
	if got, ok := BoundedHeader([]byte("A: 1\nB: 2")); !ok || string(got) != "A: 1\nB: 2" {
		t.Errorf("no blank line: %q, %v", got, ok)
	}
	many := headerBomb(MaxHeaderFields) + "Last: x\r\n cont\r\n\r\n"
	got, ok := BoundedHeader([]byte(many))
	if want := headerBomb(MaxHeaderFields) + "\r\n"; ok || string(got) != want {
		t.Errorf("one field too many: ok %v, %d bytes, want %d", ok, len(got), len(want))
	}
	exact := headerBomb(MaxHeaderFields-1) + "Last: x\r\n cont\r\n\r\n"
	if got, ok := BoundedHeader([]byte(exact)); !ok || string(got) != exact {
		t.Errorf("exactly the most fields: ok %v, %d bytes", ok, len(got))
	}
	big := "A: 1\r\nB: " + strings.Repeat("x", MaxHeaderBytes) + "\r\n\r\n"
	if got, ok := BoundedHeader([]byte(big)); ok || string(got) != "A: 1\r\n\r\n" {
		t.Errorf("too many bytes: ok %v, %q", ok, got[:min(len(got), 40)])
	}
}

// TestHeaderGuardChunks: the guard finds a part's header beyond the
// bounds however its reads are cut, and lets a part whose body has as
// many lines, a close delimiter and a line that starts like the boundary
// pass.
func TestHeaderGuardChunks(t *testing.T) {
	body := func(header string) string {
		return "preamble\r\n--b\r\nA: 1\r\n\r\n" + headerBomb(MaxHeaderFields+10) + // a body's lines
			"--bx not a boundary\r\n" + headerBomb(MaxHeaderFields+10) +
			"--b\r\n" + header + "\r\ntext\r\n--b--\r\n" + headerBomb(MaxHeaderFields+10)
	}
	for _, c := range []struct {
		header string
		trips  bool
	}{
		{headerBomb(MaxHeaderFields), false},
		{headerBomb(MaxHeaderFields + 1), true},
		{"A: " + strings.Repeat("y", MaxHeaderBytes), true},
	} {
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole":   func(r io.Reader) io.Reader { return r },
			"bytes":   iotest.OneByteReader,
			"halves":  iotest.HalfReader,
			"dataerr": iotest.DataErrReader,
		} {
			g := guardHeaders(wrap(strings.NewReader(body(c.header))), []byte("--b"))
			_, err := io.Copy(io.Discard, g)
			if tripped := g.tripped; tripped != c.trips || (err != nil) != c.trips {
				t.Errorf("%s, header of %d bytes: tripped %v, err %v; want tripped %v", name, len(c.header), tripped, err, c.trips)
			}
		}
	}
	// A nested message's header: the lines up to the first blank line.
	g := guardHeaders(bytes.NewReader([]byte(headerBomb(10)+"\r\n"+headerBomb(MaxHeaderFields+10))), nil)
	if _, err := io.Copy(io.Discard, g); err != nil || g.tripped {
		t.Errorf("a nested header of 10 fields and a long body: %v, tripped %v", err, g.tripped)
	}
}

// FuzzHeaderGuard: whether the guard finds a header beyond its bounds
// does not depend on how its reads are cut (a line, a delimiter or a
// blank line split across them), with bounds small enough for fuzzed
// input to reach; and it agrees with a count of the same lines made on
// the whole input at once.
func FuzzHeaderGuard(f *testing.F) {
	f.Add([]byte("pre\r\n--b\r\nA: 1\r\nB: 2\r\n C\r\n\r\nbody\r\n--b \t\r\nA: 1\r\n\r\n--b--\r\n"), uint8(1), false)
	f.Add([]byte("A: 1\nB: 2\nC: 3\nD: 4\n\nbody"), uint8(3), true)
	f.Add([]byte("--bx\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n--b\r\n"+strings.Repeat("x", 80)+"\r\n\r\n"), uint8(2), false)
	f.Fuzz(func(t *testing.T, data []byte, cut uint8, nested bool) {
		var delim []byte
		if !nested {
			delim = []byte("--b")
		}
		run := func(r io.Reader) bool {
			g := guardHeaders(r, delim)
			g.maxFields, g.maxBytes = 3, 64
			io.Copy(io.Discard, g)
			return g.tripped
		}
		whole := run(bytes.NewReader(data))
		if cut := int(cut%16) + 1; run(&chunks{data: data, n: cut}) != whole {
			t.Fatalf("tripped %v whole, not so in reads of %d bytes", whole, cut)
		}
		if want := overBounds(data, delim, 3, 64); whole != want {
			t.Fatalf("tripped %v, a count of the lines says %v", whole, want)
		}
	})
}

// chunks reads data n bytes at a time.
type chunks struct {
	data []byte
	n    int
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[n:]
	return n, nil
}

// overBounds is the guard's rule over data split into lines at once.
func overBounds(data, delim []byte, maxFields, maxBytes int) bool {
	lines := bytes.SplitAfter(data, []byte("\n"))
	in := delim == nil
	fields, size := 0, 0
	for _, l := range lines {
		if len(l) == 0 {
			continue
		}
		if in {
			if size += len(l); size > maxBytes {
				return true
			}
			if !bytes.HasSuffix(l, []byte("\n")) {
				continue // the last, unended line: not yet a field
			}
			switch {
			case string(l) == "\n" || string(l) == "\r\n":
				in = false
				if delim == nil {
					return false
				}
			case l[0] != ' ' && l[0] != '\t':
				if fields++; fields > maxFields {
					return true
				}
			}
			continue
		}
		if delim != nil && bytes.HasSuffix(l, []byte("\n")) && bytes.HasPrefix(l, delim) &&
			len(bytes.Trim(l[len(delim):], " \t\r\n")) == 0 {
			in, fields, size = true, 0, 0
		}
	}
	return false
}

// TestEndsHeader: EndsHeader finds the blank line Lenient stops at, CRLF
// or LF, and only at the start of a line; where it does, Lenient of the
// header followed by the body is Lenient of the whole message.
func TestEndsHeader(t *testing.T) {
	body := "\r\nbroken line in the body\r\nContent-Type: text/plain; x\r\n"
	for _, tc := range []struct {
		head string
		want bool
	}{
		{"Subject: a\r\n\r\n", true},
		{"Subject: a\n\n", true},
		{"\r\n", true},
		{"From mbox\r\nSubject: a\r\nContent-Type: text/plain; charset=\"x; y\r\n\r\n", true},
		{"Subject: a\r\n", false},
		{"Subject: a\r\n \r\n", false},
		{"Subject: a\r\n\r", false},
		{"", false},
	} {
		if got := EndsHeader([]byte(tc.head)); got != tc.want {
			t.Errorf("EndsHeader(%q) = %v, want %v", tc.head, got, tc.want)
		}
		if !tc.want {
			continue
		}
		for _, types := range []bool{false, true} {
			whole := Lenient([]byte(tc.head+body), types)
			split := append(Lenient([]byte(tc.head), types), body...)
			if !bytes.Equal(whole, split) {
				t.Errorf("Lenient(%q + body, %v) = %q, Lenient of the header then the body %q", tc.head, types, whole, split)
			}
		}
	}
}
