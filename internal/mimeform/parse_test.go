package mimeform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

func TestNestedMessageStructure(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "messages", "nested-multipart.eml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := DecodeStructure(p.Structure)
	if err != nil {
		t.Fatal(err)
	}
	outer, ok := bs.(*imap.BodyStructureMultiPart)
	if !ok || outer.Subtype != "mixed" || len(outer.Children) != 2 || outer.Extended.Params["boundary"] != "outer" {
		t.Fatalf("outer part: expected multipart/mixed with 2 parts and boundary outer, got %+v", bs)
	}
	fwd, ok := outer.Children[1].(*imap.BodyStructureSinglePart)
	if !ok || fwd.MessageRFC822 == nil || fwd.MessageRFC822.Envelope.Subject != "The forwarded one" {
		t.Fatalf("second part: expected a message/rfc822 with subject %q, got %+v", "The forwarded one", outer.Children[1])
	}
	if fwd.Extended.Disposition == nil || fwd.Extended.Disposition.Value != "inline" {
		t.Errorf("forwarded part disposition: expected inline, got %+v", fwd.Extended.Disposition)
	}
	env, err := DecodeEnvelope(p.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.To) != 2 || len(env.Cc) != 1 || !reflect.DeepEqual(env.InReplyTo, []string{"earlier@example.net"}) {
		t.Errorf("envelope: expected 2 To, 1 Cc, In-Reply-To earlier@example.net; got %+v", env)
	}
	if want := time.Date(2023, 11, 14, 9, 0, 0, 0, time.UTC); !env.Date.Equal(want) {
		t.Errorf("envelope date: expected %v, got %v", want, env.Date)
	}
}

// TestStoredFormsRoundTrip checks that the stored ENVELOPE and
// BODYSTRUCTURE give back what the extraction produced.
func TestStoredFormsRoundTrip(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "messages", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sample messages: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var md5s partMD5s
		var dates dateTexts
		bs, err := decodeStructure(p.Structure, &md5s, &dates)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err := encodeStructure(bs, md5s, dates)
		if err != nil || !bytes.Equal(again, p.Structure) {
			t.Errorf("%s: body structure does not round trip:\n%s\n%s", f, p.Structure, again)
		}
		if p.Status == Parsed {
			direct := extractOf(b)
			if !reflect.DeepEqual(direct, bs) {
				a, _ := json.Marshal(direct)
				t.Errorf("%s: decoded body structure differs from the extracted one: %s", f, a)
			}
		}
		env, err := decodeEnvelope(p.Envelope, &dates)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err = encodeEnvelope(env, dates)
		if err != nil || !bytes.Equal(again, p.Envelope) {
			t.Errorf("%s: envelope does not round trip:\n%s\n%s", f, p.Envelope, again)
		}
	}
}

// formsSamples are structureSamples and messages whose stored forms do
// not give back what was parsed: bytes that are not UTF-8 in the subject,
// a name and a parameter, a backslash before "ufffd", and dates in zones
// with an offset in seconds, at the top and in a forwarded message.
func formsSamples(t testing.TB) map[string][]byte {
	out := structureSamples(t)
	odd := map[string]string{
		"latin-1 subject": "From: a@example.org\r\nSubject: caf\xe9\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\n\r\nbody\r\n",
		"latin-1 name":    "From: J\xfcrgen <j@example.org>\r\nTo: \"B\xf6b\" <b@example.org>\r\n\r\nbody\r\n",
		"latin-1 param":   "From: a@example.org\r\nContent-Type: text/plain; name=\"r\xe9sum\xe9.txt\"\r\n\r\nbody\r\n",
		"backslash":       "From: a@example.org\r\nSubject: a \\ufffd b\r\n\r\nbody\r\n",
		"local mean time": "From: a@example.org\r\nDate: Mon, 02 Jan 1850 15:04:05 LMT\r\n\r\nbody\r\n",
		"named zone":      "From: a@example.org\r\nDate: Mon, 02 Jan 2006 15:04:05 EST\r\n\r\nbody\r\n",
		"year 10000":      "From: a@example.org\r\nDate: Mon, 02 Jan 10000 15:04:05 +0000\r\n\r\nbody\r\n",
	}
	for name, m := range odd {
		out[name] = []byte(m)
		out[name+" forwarded"] = []byte("From: a@example.org\r\nContent-Type: message/rfc822\r\n\r\n" + m)
	}
	return out
}

// TestParseFormsAsForms: ParseForms stores what Parse stores, and its
// forms are byte for byte those Forms makes from the stored bytes, where
// JSON keeps what was parsed and where it does not; in a zone whose
// offset has seconds (local mean time) too.
func TestParseFormsAsForms(t *testing.T) {
	amsterdam, err := time.LoadLocation("Europe/Amsterdam")
	if err != nil {
		t.Skipf("no zone database: %v", err)
	}
	for _, loc := range []*time.Location{time.UTC, amsterdam} {
		old := time.Local
		time.Local = loc
		for name, b := range formsSamples(t) {
			checkParseForms(t, loc.String()+" "+name, b)
		}
		time.Local = old
	}
}

func checkParseForms(t *testing.T, name string, b []byte) {
	t.Helper()
	want, err := Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	got, ef, sf, err := ParseForms(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: ParseForms stores %+v, Parse %+v", name, got, want)
	}
	we, ws, err := Forms(want.Envelope, want.Structure)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !bytes.Equal(ef, we) || !bytes.Equal(sf, ws) {
		t.Errorf("%s: ParseForms's forms\n%s\n%s\nForms's of the stored bytes\n%s\n%s", name, ef, sf, we, ws)
	}
}

// FuzzParseFormsAsForms is TestParseFormsAsForms on any bytes.
func FuzzParseFormsAsForms(f *testing.F) {
	for _, b := range formsSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Parse(b); err != nil {
			return // nothing stored to hold the forms to
		}
		checkParseForms(t, "fuzzed", b)
	})
}

// TestParseManyBoundaries: a message of many boundaries, as anyone may
// mail one within the size limit (multiparts nested 550,000 deep, 40 MB;
// a text of 500,000 lines that look like delimiters of as many
// boundaries), is parsed, and its text stays within SEARCH's reach. The
// delimiter lines were matched against a list of every boundary seen
// before them: 30,000 levels took 2.7 s, 60,000 took 13 s, and these
// would take hours (the daemon's apply of the message, and every device's).
func TestParseManyBoundaries(t *testing.T) {
	var nested strings.Builder
	nested.WriteString("From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n")
	const depth = 550000
	for i := 1; i < depth; i++ {
		fmt.Fprintf(&nested, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i-1, i)
	}
	fmt.Fprintf(&nested, "--b%d\r\nContent-Type: text/plain\r\n\r\nat the very bottom\r\n", depth-1)
	var flat strings.Builder
	flat.WriteString("From: a@example.org\r\nSubject: flat\r\n\r\n")
	for i := range 500000 {
		fmt.Fprintf(&flat, "--x%d\n", i)
	}
	flat.WriteString("at the very bottom\r\n")
	// The nested message's text is its raw bytes (it is beyond
	// MaxPartDepth), the first 16 MiB of them (maxDecodedText).
	for _, c := range []struct{ raw, text string }{
		{nested.String(), "--b20000\r\nContent-Type: multipart/mixed; boundary=b20001\r\n"},
		{flat.String(), "at the very bottom"},
	} {
		m, err := Parse([]byte(c.raw))
		if err != nil {
			t.Fatalf("Parse of %d bytes: %v", len(c.raw), err)
		}
		texts := strings.Join(BodyTexts([]byte(c.raw), m.HeaderLen), "\n")
		if !strings.Contains(texts, c.text) {
			t.Errorf("the body texts of a message of %d bytes lack %q", len(c.raw), c.text)
		}
	}
}

// TestLanguagesBounded: the parts of a message give its structure
// maxLanguages language tags together, in the order of their headers,
// and the structure stays whole. The multipart's one tag is given; a
// part's Content-Language of 600 tags gives them all; the next part's
// gives the 399 left, the last's none.
func TestLanguagesBounded(t *testing.T) {
	tags := strings.TrimSuffix(strings.Repeat("en, ", 600), ", ")
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: languages\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\nContent-Language: de\r\n\r\n")
	for i := range 3 {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain\r\nContent-Language: %s\r\n\r\npart %d\r\n", tags, i)
	}
	b.WriteString("--b--\r\n")
	m, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := DecodeStructure(m.Structure)
	if err != nil {
		t.Fatal(err)
	}
	mp, ok := bs.(*imap.BodyStructureMultiPart)
	if m.Status != Parsed || !ok || len(mp.Children) != 3 {
		t.Fatalf("status %d, structure %T: want a parsed multipart of 3 parts", m.Status, bs)
	}
	if got := mp.Extended.Language; len(got) != 1 || got[0] != "de" {
		t.Errorf("the multipart's language tags: %q, want [de]", got)
	}
	for i, want := range []int{600, maxLanguages - 601, 0} {
		got := mp.Children[i].(*imap.BodyStructureSinglePart).Extended.Language
		if len(got) != want || (want > 0 && (got[0] != "en" || got[want-1] != "en")) {
			t.Errorf("part %d: %d language tags, want %d", i+1, len(got), want)
		}
	}
}

// TestFormsKeptAfterNextParse: the forms ParseForms returns are their
// own bytes, though written into buffers kept between parses (wireBufs):
// the forms of every sample, parsed one after the other, are still each
// its own stored bytes' forms once all were parsed.
func TestFormsKeptAfterNextParse(t *testing.T) {
	samples := formsSamples(t)
	names := slices.Sorted(maps.Keys(samples))
	type parsed struct {
		m      Message
		ef, sf []byte
	}
	got := make([]parsed, len(names))
	for i, name := range names {
		m, ef, sf, err := ParseForms(samples[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got[i] = parsed{m, ef, sf}
	}
	for i, name := range names {
		we, ws, err := Forms(got[i].m.Envelope, got[i].m.Structure)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got[i].ef, we) || !bytes.Equal(got[i].sf, ws) {
			t.Errorf("%s: forms after the samples that followed\n%s\n%s\nwant\n%s\n%s", name, got[i].ef, got[i].sf, we, ws)
		}
	}
}
