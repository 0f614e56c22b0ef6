package mimeform

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// extractOf is extractStructure of b, its header read first.
func extractOf(b []byte) imap.BodyStructure {
	r := getReader(b)
	defer readers.Put(r)
	h, err := textproto.ReadHeader(r.br)
	if err != nil {
		return nil
	}
	bs, _ := extractStructure(b, h, r, nil)
	return bs
}

// readOtherwise reports whether Parse reads a part of b otherwise than
// the library, by design: a multipart cut short (no closing delimiter),
// whose last part Parse reads with its last line break where the library
// drops it at the end of the data (docs/IMAP.md, "Odd messages, part by
// part"; held to Dovecot's answers by TestOddPartsRead in internal/imapd,
// and by TestCutShortLastLineBreak); a forwarded message's header with a
// line that is no field, which Parse reads past (TestForwardedHeaderLenient);
// a part's header of fields alone, which Parse reads as a part of no body
// (TestPartOfFieldsAlone); a forwarded message's header of no field,
// which Parse reads to its blank line; a Content-Type of "multipart" without a
// subtype, one part to Parse and a multipart to the library
// (TestMultipartWithoutSubtype); a message/global part in base64 or
// quoted-printable, one part to Parse and a message to the library
// (TestEncodedGlobalPart).
func readOtherwise(b []byte) bool {
	r := getReader(b)
	defer readers.Put(r)
	h, err := textproto.ReadHeader(r.br)
	if err != nil {
		return false
	}
	w := &walk{bounds: structureBounds}
	return w.within(h, r.br) && !w.tripped && (len(w.cut) > 0 || w.mended || w.untyped || w.encoded)
}

// libraryStructure is the structure as go-imap extracts it, the nested
// messages' envelopes made by extractEnvelope: what Parse stored before
// it extracted the structure itself.
func libraryStructure(b []byte) (bs imap.BodyStructure) {
	br := bufio.NewReader(bytes.NewReader(b))
	header, err := textproto.ReadHeader(br)
	if err != nil {
		return nil
	}
	if !withinBounds(header, br, structureBounds) {
		return nil
	}
	defer func() {
		if recover() != nil {
			bs = nil
		}
	}()
	bs = imapserver.ExtractBodyStructure(bytes.NewReader(b))
	if !wellFormed(bs) {
		return nil
	}
	br = bufio.NewReader(bytes.NewReader(b))
	if h, err := textproto.ReadHeader(br); err == nil {
		libraryEnvelopes(bs, h, br)
	}
	return bs
}

func libraryEnvelopes(bs imap.BodyStructure, h textproto.Header, r io.Reader) {
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		mh := gomessage.Header{Header: h}
		_, params, _ := mh.ContentType()
		mr := textproto.NewMultipartReader(r, params["boundary"])
		for _, child := range bs.Children {
			p, err := mr.NextPart()
			if err != nil {
				return
			}
			libraryEnvelopes(child, p.Header, p)
		}
	case *imap.BodyStructureSinglePart:
		if bs.MessageRFC822 == nil {
			return
		}
		// A header cut short (no blank line after it) still gives its
		// fields, as the top-level message's does.
		br := bufio.NewReader(r)
		ch, _ := textproto.ReadHeader(br)
		bs.MessageRFC822.Envelope = extractEnvelope(ch, nil, nil)
		libraryEnvelopes(bs.MessageRFC822.BodyStructure, ch, br)
	}
}

// structureSamples are the test messages, a seeded 10 KB one, and
// variants of each: cut short, with LF line endings, and forwarded
// inside another message.
func structureSamples(t testing.TB) map[string][]byte {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "messages", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sample messages: %v", err)
	}
	out := map[string][]byte{"seeded": benchMessage(7, 10<<10)}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	for name, b := range out {
		out[name+" cut"] = b[:len(b)*2/3]
		out[name+" lf"] = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
		out[name+" forwarded"] = []byte("From: a@example.org\r\nSubject: fwd\r\n" +
			"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" +
			"Content-Type: text/plain\r\n\r\nsee below\r\n--b1\r\n" +
			"Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"m.eml\"\r\n" +
			"Content-Language: en, de\r\n\r\n" + string(b) + "\r\n--b1--\r\n")
	}
	return out
}

// TestBodyStructureAsLibrary holds Parse's own extraction to go-imap's:
// the stored structure byte for byte, and the whole of Parse's output.
func TestBodyStructureAsLibrary(t *testing.T) {
	for name, b := range structureSamples(t) {
		if libraryGivesUp(b) || readOtherwise(b) {
			continue
		}
		lib, own := libraryStructure(b), extractOf(b)
		if (lib == nil) != (own == nil) {
			t.Errorf("%s: library structure %v, own %v", name, lib, own)
			continue
		}
		if lib == nil {
			continue
		}
		// The library leaves a text part's default charset out.
		defaultCharsets(lib)
		want, err := encodeStructure(lib, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodeStructure(own, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: structure differs from the library's:\n%s\n%s", name, got, want)
		}
		if ws, gs := structureWire(lib, nil, nil), structureWire(own, nil, nil); !bytes.Equal(ws, gs) {
			t.Errorf("%s: IMAP form differs from the library's:\n%s\n%s", name, gs, ws)
		}
		if !strings.Contains(name, "forwarded") {
			continue
		}
		if s := string(got); !strings.Contains(s, "attachment") || !strings.Contains(s, "\"de\"") {
			t.Errorf("%s: forwarded part's disposition or language missing: %s", name, s)
		}
	}
}

// TestParseAllocation bounds what Parse allocates for a seeded 10 KB
// message: go-imap's extraction read every part into memory and four
// fresh 4 KB buffers read the message, 65 KB in all.
func TestParseAllocation(t *testing.T) {
	msg := benchMessage(7, 10<<10)
	Parse(msg) // fill the pools
	var before, after runtimeMem
	before.read()
	const n = 50
	for range n {
		if _, err := Parse(msg); err != nil {
			t.Fatal(err)
		}
	}
	after.read()
	if per := (after.bytes - before.bytes) / n; per > 16<<10 {
		t.Errorf("Parse of a 10 KB message allocated %d bytes, more than 16 KiB", per)
	}
}

type runtimeMem struct{ bytes uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.bytes = s.TotalAlloc
}

// FuzzBodyStructureAsLibrary holds the own structure walk to go-imap's on
// any input: where the library makes a structure, Parse's must encode to
// the same bytes and the same IMAP form, and Parse must not fail where the
// library did not.
func FuzzBodyStructureAsLibrary(f *testing.F) {
	for _, b := range structureSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lib := libraryStructure(b)
		own := extractOf(b)
		if lib == nil || libraryGivesUp(b) || readOtherwise(b) || paramCount(lib) > maxParams {
			// Past maxParams, Parse keeps fewer (TestParamsBounded).
			return
		}
		if own == nil {
			t.Fatalf("the library extracts a structure, the own walk none: %v", lib)
		}
		// The library leaves a text part's default charset out.
		defaultCharsets(lib)
		want, err := encodeStructure(lib, nil, nil)
		if err != nil {
			return // the library's structure does not encode: nothing to hold ours to
		}
		got, err := encodeStructure(own, nil, nil)
		if err != nil {
			t.Fatalf("own structure does not encode (%v) where the library's does", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("structure differs from the library's:\n%s\n%s", got, want)
		}
		if ws, gs := structureWire(lib, nil, nil), structureWire(own, nil, nil); !bytes.Equal(ws, gs) {
			t.Fatalf("IMAP form differs from the library's:\n%s\n%s", gs, ws)
		}
	})
}

// unfoldKeepingCR joins a field's folded lines as the library's header
// reader does: a bare CR (one no LF follows) stays in the value, where
// mime.ParseMediaType refuses it.
func unfoldKeepingCR(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "")
	return strings.ReplaceAll(v, "\n", "")
}

// libraryGivesUp reports whether b may hold what go-imap's extraction
// reads as less than Parse does (lenient.go): a Content-Type or
// Content-Disposition field, anywhere, whose value mime.ParseMediaType
// refuses (a bare CR kept in it), or a multipart/digest, whose parts
// without a Content-Type the library takes for text. Parse is held to the
// library elsewhere only.
func libraryGivesUp(b []byte) bool {
	if bytes.Contains(bytes.ToLower(b), []byte("digest")) {
		return true
	}
	for i := 0; i < len(b); {
		end := lineEnd(b, i)
		line := strings.ToLower(string(b[i:end]))
		for _, name := range []string{"content-type", "content-disposition"} {
			rest, ok := strings.CutPrefix(line, name)
			if !ok {
				continue
			}
			rest = strings.TrimLeft(rest, " \t")
			if !strings.HasPrefix(rest, ":") {
				continue
			}
			v := string(b[i+len(line)-len(rest)+1 : fieldEnd(b, end)])
			if _, _, err := mime.ParseMediaType(strings.TrimSpace(unfoldKeepingCR(v))); err != nil {
				return true
			}
		}
		i = end
	}
	return false
}
