package mimeform

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/emersion/go-message/textproto"
)

func TestLenient(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Subject: a\r\n\r\nbody", "Subject: a\r\n\r\nbody"},
		{"Subject: a\r\nno colon\r\nTo: b\r\n\r\nbody", "Subject: a\r\nTo: b\r\n\r\nbody"},
		{"From a@b Mon Jan  1 00:00:00 2024\nSubject: a\n\nbody", "Subject: a\n\nbody"},
		{" leading\n  more\nSubject: a\n\nx", "Subject: a\n\nx"},
		{"X Bad: v\n cont\nSubject: a\n\nx", "Subject: a\n\nx"},
		{"X-\xe9: v\nSubject: a\n\nx", "Subject: a\n\nx"},
		{"Subject : a\r\n\r\n", "Subject : a\r\n\r\n"},
		{"no header at all\r\nat all\r\n\r\nbody", "no header at all\r\nat all\r\n\r\nbody"},
		{"Subject: a\r\nstray", "Subject: a\r\n"},
		{"Content-Type: text/plain; charset=us-ascii (Plain text)\r\n\r\nx", "Content-Type: text/plain; charset=us-ascii\r\n\r\nx"},
		{"Content-type: multipart/mixed;\r\n boundary=\"b\" (made)\r\nSubject: a\r\n\r\nx", "Content-type: multipart/mixed; boundary=b\r\nSubject: a\r\n\r\nx"},
	} {
		if got := string(Lenient([]byte(c.in), true)); got != c.want {
			t.Errorf("Lenient(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	b := []byte("Content-Type: text/plain (c)\r\nx\r\n\r\nbody")
	if got := string(Lenient(b, false)); got != "Content-Type: text/plain (c)\r\n\r\nbody" {
		t.Errorf("Lenient without types: %q", got)
	}
	clean := []byte("Subject: a\r\n\r\nbody")
	if got := Lenient(clean, true); &got[0] != &clean[0] {
		t.Error("a clean message was copied")
	}
}

func TestContentType(t *testing.T) {
	for _, c := range []struct {
		v, t   string
		params map[string]string
	}{
		{"", "text/plain", nil},
		{"TEXT/PLAIN; CHARSET=utf-8", "text/plain", map[string]string{"charset": "utf-8"}},
		{"text/plain; charset=us-ascii (Plain text)", "text/plain", map[string]string{"charset": "us-ascii"}},
		{"TEXT/PLAIN (c); charset=iso-8859-1", "text/plain", map[string]string{"charset": "iso-8859-1"}},
		{"text/plain; charset=", "text/plain", map[string]string{}},
		{"application/pdf; name=x.pdf; name=y.pdf", "application/pdf", map[string]string{"name": "x.pdf"}},
		{"application/pdf; name=my file.pdf; x=a@b", "application/pdf", map[string]string{"name": "my file.pdf", "x": "a@b"}},
		{"attachment; filename*=utf-8''%C3%A9t%C3%A9.txt; filename*=x", "attachment", map[string]string{"filename": "été.txt"}},
		{"text/plain; name==?UTF-8?Q?=C3=A9?=", "text/plain", map[string]string{"name": "é"}},
		// RFC 2231 in charsets other than UTF-8 and US-ASCII, which
		// mime.ParseMediaType does not decode, and left out.
		{"attachment; filename*=iso-8859-1'de'Gr%FC%DFe.txt; size=3", "attachment", map[string]string{"filename": "Grüße.txt", "size": "3"}},
		{"attachment; filename*=SHIFT_JIS''%93%FA%96%7B.txt", "attachment", map[string]string{"filename": "日本.txt"}},
		{"application/pdf; name*0*=iso-8859-1'fr'r%E9sum%E9;\r\n name*1=\" final\";\r\n name*2*=%2Epdf", "application/pdf", map[string]string{"name": "résumé final.pdf"}},
		{"application/pdf; name*0*=x-unknown''abc", "application/pdf", map[string]string{"name": ""}}, // as mime.ParseMediaType has it
		{"application/pdf; name*0*=iso-8859-1''a; name*2*=c", "application/pdf", map[string]string{"name": ""}},
		{"garbage", "garbage", nil},
	} {
		var h textproto.Header
		if c.v != "" {
			h.Set("Content-Type", c.v)
		}
		got, params := ContentType(h)
		if got != c.t || !maps.Equal(params, c.params) {
			t.Errorf("ContentType(%q) = %q %v, want %q %v", c.v, got, params, c.t, c.params)
		}
	}
}

// FuzzLenient: whatever the bytes, Lenient, Mended and DecodeBase64 do not
// panic (they run on every delivered message, on every device),
// Lenient keeps the body as it came, and a second pass changes nothing.
func FuzzLenient(f *testing.F) {
	f.Add([]byte("Subject: a\r\nno colon\r\nContent-Type: text/plain; charset=us-ascii (x)\r\n\r\nbody"))
	f.Add([]byte("From x\n Content-type: multipart/mixed; boundary=\"b\"\n\n--b\n\nx"))
	f.Add([]byte("Content-Disposition: attachment; filename=a b; filename=c;;=\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, types := range []bool{false, true} {
			l := Lenient(b, types)
			body := b[headerLength(b):]
			if !bytes.HasSuffix(l, body) {
				t.Fatalf("Lenient(%q, %v) = %q lost the body %q", b, types, l, body)
			}
			if again := Lenient(l, types); !bytes.Equal(again, l) {
				t.Fatalf("Lenient(%q, %v) = %q, and again %q", b, types, l, again)
			}
		}
		if p := Mended(b); len(b) > 0 && len(p) == 0 {
			t.Fatalf("Mended(%q) is empty", b)
		}
		DecodeBase64(b)
		ContentType(textproto.Header{})
		typedField(string(b))
	})
}

func TestTransferEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"base64":                     "base64",
		" Quoted-Printable \t":       "Quoted-Printable",
		"quoted-printable (by hand)": "quoted-printable",
		"(c) BASE64":                 "BASE64",
		"8bit (x (nested) y)":        "8bit",
		"":                           "",
	} {
		if got := TransferEncoding(in); got != want {
			t.Errorf("TransferEncoding(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]bool{
		"Content-Transfer-Encoding: base64\r\n\r\nx (y)":          false,
		"A: b\r\ncontent-transfer-encoding: base64 (c)\r\n\r\n":   true,
		"\r\n--b\r\nCONTENT-TRANSFER-ENCODING: (c) 7BIT\r\n":      true,
		"Subject: (note) on Content-Transfer-Encoding:\r\n":       false,
		"Content-Transfer-Encoding: 7bit\r\nSubject: (x)\r\n\r\n": false,
		"Content-Transfer-Encoding:\r\n (folded) base64\r\n\r\n":  true,
	} {
		if got := CommentedTransferEncoding([]byte(in)); got != want {
			t.Errorf("CommentedTransferEncoding(%q) = %v, want %v", in, got, want)
		}
	}
}

// commentedTransferEncodingByName is CommentedTransferEncoding as it was
// written first, a search for each name in turn: the reference.
func commentedTransferEncodingByName(b []byte) bool {
	for _, name := range [][]byte{[]byte("ransfer-Encoding:"), []byte("ransfer-encoding:"), []byte("RANSFER-ENCODING:")} {
		for i := 0; ; {
			j := bytes.Index(b[i:], name)
			if j < 0 {
				break
			}
			i += j + len(name)
			if bytes.IndexByte(b[i:fieldEnd(b, lineEnd(b, i))], '(') >= 0 {
				return true
			}
		}
	}
	return false
}

// TestCommentedTransferEncodingOnePass checks the one pass over a
// message's hyphens against a search for each name in turn, over texts
// made of the names, their pieces, parentheses, line ends, folds and
// hyphens, in random order and at every offset.
func TestCommentedTransferEncodingOnePass(t *testing.T) {
	pieces := []string{"Content-T", "ransfer-Encoding:", "ransfer-encoding:", "RANSFER-ENCODING:", "ransfer-ENCODING:",
		"ransfer", "-", "Encoding:", "(", ")", "\r\n", "\n", " ", "\t", "x", "--", "base64", "r", "-E"}
	r := rand.New(rand.NewPCG(3, 5))
	found := 0
	for i := range 20000 {
		var b []byte
		for range 1 + r.IntN(12) {
			b = append(b, pieces[r.IntN(len(pieces))]...)
		}
		b = b[r.IntN(len(b)):]
		want := commentedTransferEncodingByName(b)
		if got := CommentedTransferEncoding(b); got != want {
			t.Fatalf("text %d, %q: %v, want %v", i, b, got, want)
		}
		if want {
			found++
		}
	}
	if found < 200 {
		t.Errorf("only %d texts of 20,000 hold a commented field", found)
	}
}
