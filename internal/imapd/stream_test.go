package imapd

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// streamCorpus is mail of the shapes the streamed sections must read as
// the path holding the message whole does: the test messages, a nested
// message, a digest, a header Lenient mends, bare LF line ends, base64
// with stray characters and without padding, broken quoted-printable,
// empty parts, a header without its blank line.
func streamCorpus() []string {
	corpus := []string{nestedMessage}
	for _, name := range []string{"plain", "multipart", "latin1", "broken"} {
		corpus = append(corpus, messages[name])
	}
	crlf := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	return append(corpus,
		crlf("From: a@example.org\nSubject: digest\nMIME-Version: 1.0\nContent-Type: multipart/digest; boundary=d\n\n"+
			"--d\n\nFrom: one@example.org\nSubject: one\n\nfirst\n--d\nContent-Type: message/rfc822\n\nFrom: two@example.org\n\nsecond\n"+
			"--d\nContent-Type: text/plain\n\nnot a message\n--d--\n"),
		"From mbox line\r\nFrom: a@example.org\r\nbroken line\r\nSubject: lenient\r\nContent-Type: multipart/mixed; boundary=x; junk\r\n\r\n"+
			"--x\r\nContent-Type: text/plain; charset=\"utf-8; q\r\nContent-Transfer-Encoding: quoted-printable (hand)\r\n\r\nh=C3=A9\r\n"+
			"--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC!AwQF\r\nBgcICQ\r\n--x--\r\n",
		"From: a@example.org\nSubject: bare LF\nContent-Type: multipart/alternative; boundary=\"lf\"\n\n--lf\nContent-Type: text/plain\n\n"+
			"plain\n--lf\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGI+aGk8L2I+\n--lf--\n",
		crlf("From: a@example.org\nContent-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"+
			"bad =ZZ sequence\n--o\nContent-Type: text/plain\n\n--o\nContent-Type: multipart/related; boundary=i\n\n--i\nContent-Type: text/plain\n\n"+
			"deep\n--i\nContent-Type: message/rfc822\n\nSubject: inner\nContent-Type: multipart/mixed; boundary=j\n\n--j\n\nj one\n--j--\n--i--\n--o--\n"),
		"Subject: only a header\r\nFrom: a@example.org\r\n",
		"Subject: empty body\r\n\r\n",
		crlf("From: a@example.org\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ\n"),
		crlf("From: a@example.org\nContent-Type: text/plain\nContent-Transfer-Encoding: x-unknown\n\nsome text\n"),
		simplifiedMessage(),
	)
}

// simplifiedMessage is a multipart nested beyond the parsing bounds
// (Simplified), whose first part is a message/rfc822 part.
func simplifiedMessage() string {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=top\r\n\r\n")
	b.WriteString("--top\r\nContent-Type: message/rfc822\r\n\r\nSubject: forwarded\r\n\r\nforwarded text\r\n--top\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n")
	const levels = 40
	for i := range levels {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i, i+1)
	}
	fmt.Fprintf(&b, "--b%d\r\nContent-Type: text/plain\r\n\r\nbottom\r\n--top--\r\n", levels)
	return b.String()
}

// streamSectionsOf is every BODY section form on the part paths the
// corpus has, and some it has not, with and without partials.
func streamSectionsOf() []*imap.FetchItemBodySection {
	paths := [][]int{nil, {1}, {2}, {3}, {4}, {5}, {9}, {1, 1}, {1, 2}, {2, 1}, {3, 1}, {3, 2}, {3, 2, 1}, {5, 1}, {5, 1, 1}}
	partials := []*imap.SectionPartial{nil, {Offset: 0, Size: 100}, {Offset: 3, Size: 7}, {Offset: 10000, Size: 5}}
	var out []*imap.FetchItemBodySection
	for _, p := range paths {
		specs := []imap.PartSpecifier{imap.PartSpecifierNone, imap.PartSpecifierHeader, imap.PartSpecifierText}
		if len(p) > 0 {
			specs = append(specs, imap.PartSpecifierMIME)
		}
		for _, sp := range specs {
			for _, pa := range partials {
				out = append(out, &imap.FetchItemBodySection{Part: p, Specifier: sp, Partial: pa})
			}
		}
		out = append(out,
			&imap.FetchItemBodySection{Part: p, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "content-type"}},
			&imap.FetchItemBodySection{Part: p, Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject"}})
	}
	return out
}

// TestStreamedSectionsMatch: every section form of every message of the
// corpus, streamed from its bytes (stored), is byte for byte what the path
// holding the message whole gives (bodySection, binarySection), and
// BINARY.SIZE its length; where the streamed reading leaves a section to
// that path, it says so rather than answer otherwise. Most sections must
// be streamed.
func TestStreamedSectionsMatch(t *testing.T) {
	var streamed, left int
	for i, raw := range streamCorpus() {
		hl, status, env, bs, err := mimeform.Parser{}.Parse([]byte(raw))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		m := &mailstore.Message{UID: 1, Size: int64(len(raw)), HeaderLen: hl, Parse: status, Envelope: env, BodyStructure: bs, Raw: []byte(raw)}
		sm := *m
		sm.Raw = nil
		s, ok, err := openStored(&sm, strings.NewReader(raw))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !ok {
			t.Fatalf("message %d: not streamed (header of %d bytes)", i, hl)
		}
		check := func(what string, p piece, ok bool, partial *imap.SectionPartial, want []byte) {
			t.Helper()
			if !ok {
				if len(want) > 0 {
					left++
					t.Logf("message %d %s: left", i, what)
				}
				return
			}
			streamed++
			off, k := window(p.n, partial)
			var got bytes.Buffer
			if err := p.writeTo(&got, off, k); err != nil {
				t.Errorf("message %d %s: %v", i, what, err)
				return
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("message %d %s: streamed %q, want %q", i, what, got.Bytes(), want)
			}
		}
		for _, sec := range streamSectionsOf() {
			p, ok := s.bodyPiece(sec)
			check(fmt.Sprintf("BODY[%v.%s %v %v]<%v>", sec.Part, sec.Specifier, sec.HeaderFields, sec.HeaderFieldsNot, sec.Partial),
				p, ok, sec.Partial, bodySection(m, sec))
		}
		for _, sec := range streamSectionsOf() {
			if sec.Specifier != imap.PartSpecifierNone {
				continue
			}
			want := binarySection(m, sec.Part)
			p, ok := s.binaryPiece(sec.Part)
			check(fmt.Sprintf("BINARY[%v]<%v>", sec.Part, sec.Partial), p, ok, sec.Partial, partial(want, sec.Partial))
			if ok && p.n != int64(len(want)) {
				t.Errorf("message %d BINARY.SIZE[%v]: streamed %d, want %d", i, sec.Part, p.n, len(want))
			}
		}
	}
	t.Logf("%d sections streamed, %d left to the path holding the message", streamed, left)
	if streamed < 10*left {
		t.Errorf("%d sections streamed and %d left: want most streamed", streamed, left)
	}
}

// TestBase64ReaderMatchesDecodeBase64: the streamed base64 decoding gives
// what mimeform.DecodeBase64 gives whole, whatever the pieces it reads.
func TestBase64ReaderMatchesDecodeBase64(t *testing.T) {
	for _, in := range []string{"", "QQ", "QUI", "QUJD", "QUJDRA", "QUJDRA==", "QU\r\nJD!RE=VG", "Q", "QUJDR", "=QUJD", "QUJD\r\nRE\r\nVG\r\nR0g"} {
		for _, step := range []int{1, 2, 3, 5, 64} {
			r := &base64Reader{r: &oneByOne{b: []byte(in), step: step}, in: make([]byte, step)}
			var got bytes.Buffer
			if _, err := got.ReadFrom(r); err != nil {
				t.Fatal(err)
			}
			if want := mimeform.DecodeBase64([]byte(in)); !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%q read %d at a time: %q, want %q", in, step, got.Bytes(), want)
			}
		}
	}
}

// oneByOne gives b step bytes at a time.
type oneByOne struct {
	b    []byte
	step int
}

func (r *oneByOne) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.step)], r.b)
	r.b = r.b[n:]
	return n, nil
}
