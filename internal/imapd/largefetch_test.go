package imapd

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// base64Lines is b in base64, 76 characters a line, CRLF ended.
func base64Lines(b []byte) string {
	enc := base64.StdEncoding.EncodeToString(b)
	var s strings.Builder
	for len(enc) > 76 {
		s.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	s.WriteString(enc + "\r\n")
	return s.String()
}

// largeMessages are two messages the store reads in pieces (over 256
// KiB): a MIME one with a quoted-printable part, a base64 attachment
// (attachment, its bytes), a message/rfc822 part holding a
// multipart/alternative, and an empty part; and one that is not MIME.
func largeMessages() (mime, plain string, attachment []byte) {
	rng := rand.New(rand.NewPCG(1, 2))
	attachment = make([]byte, 600<<10)
	for i := range attachment {
		attachment[i] = byte(rng.Uint32())
	}
	var m strings.Builder
	m.WriteString("From: Big <big@example.org>\r\nTo: alice@example.net\r\nSubject: large sections\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"big\"\r\n\r\npreamble\r\n" +
		"--big\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for i := range 5000 {
		fmt.Fprintf(&m, "caf=C3=A9 line %d, cr=C3=A8me br=C3=BBl=C3=A9e and a soft break =\r\nhere\r\n", i)
	}
	m.WriteString("--big\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"random.bin\"\r\n\r\n")
	m.WriteString(base64Lines(attachment))
	m.WriteString("--big\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@example.org\r\nSubject: inner\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"in\"\r\n\r\n--in\r\nContent-Type: text/plain\r\n\r\n")
	m.WriteString(strings.Repeat("inner text, line after line\r\n", 7000))
	m.WriteString("--in\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	m.WriteString(base64Lines([]byte(strings.Repeat("<p>inner html</p>\n", 5000))))
	m.WriteString("--in--\r\n--big\r\nContent-Type: text/plain\r\n\r\n--big--\r\n")
	plain = "From: a@example.org\r\nSubject: long text\r\n\r\n" + strings.Repeat("a long line of text that is no MIME at all\r\n", 10000)
	return m.String(), plain, attachment
}

// TestLargeSectionsByteForByte: every section form of two large messages
// (the store reads them in pieces, so their sections are streamed) is
// what the path holding the message whole gives, byte for byte
// (streamSections off), through a real server and client; BODY[] is the
// message and BINARY[2] its attachment's bytes.
func TestLargeSectionsByteForByte(t *testing.T) {
	r := newRig(t)
	d := r.device("a")
	mime, plain, attachment := largeMessages()
	r.Deliver([]byte(mime))
	d.synced(r.Deliver([]byte(plain)))
	c := d.client(nil)
	mustSelect(t, c, "INBOX")

	body := func(part []int, spec imap.PartSpecifier, p *imap.SectionPartial, fields ...string) *imap.FetchOptions {
		return &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Part: part, Specifier: spec, Partial: p, HeaderFields: fields, Peek: true}}}
	}
	binary := func(part []int, p *imap.SectionPartial) *imap.FetchOptions {
		return &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{{Part: part, Partial: p, Peek: true}}}
	}
	none, hdr, text, mimeSpec := imap.PartSpecifierNone, imap.PartSpecifierHeader, imap.PartSpecifierText, imap.PartSpecifierMIME
	forms := []*imap.FetchOptions{
		body(nil, none, nil), body(nil, text, nil), body(nil, hdr, nil), body(nil, hdr, nil, "Subject"),
		body(nil, none, &imap.SectionPartial{Size: 100}), body(nil, none, &imap.SectionPartial{Offset: 100_000_000, Size: 10}),
		body([]int{1}, none, nil), body([]int{1}, mimeSpec, nil), body([]int{2}, none, nil),
		body([]int{2}, none, &imap.SectionPartial{Offset: 1000, Size: 5000}), body([]int{3}, none, nil),
		body([]int{3}, hdr, nil), body([]int{3}, text, nil), body([]int{3, 1}, none, nil), body([]int{3, 2}, mimeSpec, nil),
		body([]int{4}, none, nil), body([]int{2}, hdr, nil),
		binary(nil, nil), binary([]int{1}, nil), binary([]int{2}, nil), binary([]int{2}, &imap.SectionPartial{Offset: 7, Size: 100}),
		binary([]int{3, 2}, nil),
		{BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{1}}, {Part: []int{2}}, {Part: []int{3, 1}}}},
		{UID: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}, {Part: []int{2}, Peek: true}},
			BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1}, Peek: true}}},
	}
	fetch := func(opts *imap.FetchOptions, streamed bool) []*imapclient.FetchMessageBuffer {
		t.Helper()
		streamSections = streamed
		defer func() { streamSections = true }()
		got, err := c.Fetch(imap.SeqSetNum(1, 2), opts).Collect()
		if err != nil || len(got) != 2 {
			t.Fatalf("FETCH %+v: %d messages, %v", opts, len(got), err)
		}
		return got
	}
	for _, opts := range forms {
		streamed, whole := fetch(opts, true), fetch(opts, false)
		for i := range streamed {
			s, w := streamed[i], whole[i]
			if !reflect.DeepEqual(s.BodySection, w.BodySection) || !reflect.DeepEqual(s.BinarySection, w.BinarySection) ||
				!reflect.DeepEqual(s.BinarySectionSize, w.BinarySectionSize) {
				t.Errorf("message %d, FETCH %s: streamed and whole differ", i+1, describe(opts))
			}
		}
	}
	got := fetch(body(nil, none, nil), true)
	if b := got[0].BodySection[0].Bytes; string(b) != mime {
		t.Errorf("BODY[] of the MIME message: %d bytes, want the %d delivered", len(b), len(mime))
	}
	got = fetch(binary([]int{2}, nil), true)
	if b := got[0].BinarySection[0].Bytes; !bytes.Equal(b, attachment) {
		t.Errorf("BINARY[2]: %d bytes, want the attachment's %d", len(b), len(attachment))
	}
}

// describe names a FETCH's sections for a failure message.
func describe(opts *imap.FetchOptions) string {
	var s []string
	for _, b := range opts.BodySection {
		s = append(s, fmt.Sprintf("BODY[%v.%s%v]<%v>", b.Part, b.Specifier, b.HeaderFields, b.Partial))
	}
	for _, b := range opts.BinarySection {
		s = append(s, fmt.Sprintf("BINARY[%v]<%v>", b.Part, b.Partial))
	}
	for _, b := range opts.BinarySectionSize {
		s = append(s, fmt.Sprintf("BINARY.SIZE[%v]", b.Part))
	}
	return strings.Join(s, " ")
}

// TestLargeFetchHoldsNoCopy: a FETCH of BODY[], BODY[1], BINARY[1] or
// BODY[]<0.100> of a 16 MB message (a base64 attachment) allocates, in
// all, less than half the message's size in the process (runtime/metrics,
// server and client alike; the client reads each literal in pieces and
// keeps none). Read whole, the message cost its size to read from the
// store, once more in the framer's held output, and for a part twice more
// in the library's extraction and its decoding: 3.4 times its size at
// its peak. Read whole still, BODY[] costs less than 1.5 times the
// message: the framer no longer copies the literal.
func TestLargeFetchHoldsNoCopy(t *testing.T) {
	r := newRig(t)
	d := r.device("a")
	var msg strings.Builder
	msg.WriteString("From: a@example.org\r\nSubject: large\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	line := "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
	for msg.Len() < 16<<20 {
		msg.WriteString(line)
	}
	msg.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n--b--\r\n")
	size := msg.Len()
	d.synced(r.Deliver([]byte(msg.String())))
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	forms := map[string]*imap.FetchOptions{
		"BODY[]":        {BodySection: []*imap.FetchItemBodySection{{Peek: true}}},
		"BODY[1]":       {BodySection: []*imap.FetchItemBodySection{{Part: []int{1}, Peek: true}}},
		"BINARY[1]":     {BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1}, Peek: true}}},
		"BODY[]<0.100>": {BodySection: []*imap.FetchItemBodySection{{Peek: true, Partial: &imap.SectionPartial{Size: 100}}}},
	}
	want := map[string]int64{"BODY[]": int64(size), "BODY[1]": int64(size - 200), "BINARY[1]": int64(size) * 3 / 4 * 70 / 72, "BODY[]<0.100>": 100}
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	for name, opts := range forms {
		runtime.GC()
		metrics.Read(sample)
		before := sample[0].Value.Uint64()
		n, err := fetchDiscard(c, opts)
		metrics.Read(sample)
		allocated := sample[0].Value.Uint64() - before
		if err != nil {
			t.Fatalf("FETCH %s: %v", name, err)
		}
		if n < want[name]*9/10 || n > want[name]*11/10 {
			t.Errorf("FETCH %s: %d bytes, want about %d", name, n, want[name])
		}
		t.Logf("FETCH %s of a %d MB message: %d bytes, %.1f MB allocated", name, size>>20, n, float64(allocated)/(1<<20))
		if allocated > uint64(size)/2 {
			t.Errorf("FETCH %s of a message of %d bytes allocated %d bytes, want less than half its size", name, size, allocated)
		}
	}
	// Read whole (where the streamed reading gives up), BODY[] costs the
	// message read and no more: the framer passes go-imap's literal on as
	// it comes, where it copied it whole into its held output.
	streamSections = false
	defer func() { streamSections = true }()
	runtime.GC()
	metrics.Read(sample)
	before := sample[0].Value.Uint64()
	n, err := fetchDiscard(c, forms["BODY[]"])
	metrics.Read(sample)
	allocated := sample[0].Value.Uint64() - before
	if err != nil || n != int64(size) {
		t.Fatalf("FETCH BODY[] read whole: %d bytes, %v", n, err)
	}
	t.Logf("FETCH BODY[] of a %d MB message read whole: %.1f MB allocated", size>>20, float64(allocated)/(1<<20))
	if allocated > uint64(size)*3/2 {
		t.Errorf("FETCH BODY[] of a message of %d bytes, read whole, allocated %d bytes, want less than 1.5 times its size", size, allocated)
	}
}

// fetchDiscard fetches message 1 with opts and returns the bytes of its
// sections, reading each literal in pieces and keeping none.
func fetchDiscard(c *imapclient.Client, opts *imap.FetchOptions) (int64, error) {
	cmd := c.Fetch(imap.SeqSetNum(1), opts)
	defer cmd.Close()
	var n int64
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		for item := msg.Next(); item != nil; item = msg.Next() {
			var lit imap.LiteralReader
			switch item := item.(type) {
			case imapclient.FetchItemDataBodySection:
				lit = item.Literal
			case imapclient.FetchItemDataBinarySection:
				lit = item.Literal
			}
			if lit != nil {
				k, err := io.Copy(io.Discard, lit)
				n += k
				if err != nil {
					return n, err
				}
			}
		}
	}
	return n, cmd.Close()
}

// TestLargeBinaryUnknownEncoding: BINARY of a part of a large message in a
// transfer encoding the server cannot undo is refused with NO
// [UNKNOWN-CTE] (RFC 3516 section 4.3), as for a small message. The
// check read the part's header from the message's bytes before they were
// read (the store leaves a large message's for later), found none, and the
// answer was an empty literal.
func TestLargeBinaryUnknownEncoding(t *testing.T) {
	r := newRig(t)
	d := r.device("a")
	msg := "From: a@example.org\r\nSubject: uuencoded\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=u\r\n\r\n" +
		"--u\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat("a line of text\r\n", 30000) +
		"--u\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\nend\r\n--u--\r\n"
	d.synced(r.Deliver([]byte(msg)))
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	for _, streamed := range []bool{true, false} {
		streamSections = streamed
		_, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{{Part: []int{2}, Peek: true}}}).Collect()
		streamSections = true
		if imapCode(err) != imap.ResponseCodeUnknownCTE {
			t.Errorf("BINARY[2] of a %d-byte message in x-uuencode (streamed %v): %v, want NO [UNKNOWN-CTE]", len(msg), streamed, err)
		}
	}
}
