package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

// FuzzDecodeBatch: a body that decodes re-encodes to the same bytes (one
// encoding per batch), and nothing panics.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(EncodeBatch([][]byte{[]byte("hello"), {}, {0, 0xff}}))
	f.Add(EncodeBatch([][]byte{make([]byte, 300)}))
	f.Add([]byte{0x81, 0x00, 'a'})
	f.Add([]byte{5, 'a'})
	f.Add(bytes.Repeat([]byte{0xff}, 11))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		batch, err := DecodeBatch(body, 1000)
		if err != nil {
			return
		}
		if again := EncodeBatch(batch); !bytes.Equal(again, body) {
			t.Fatalf("decode then encode changed %x into %x", body, again)
		}
	})
}

// FuzzReadEntries: the client's response decoder never panics, and a
// response it accepts re-encodes to the same bytes.
func FuzzReadEntries(f *testing.F) {
	var b bytes.Buffer
	ew := &entryWriter{w: bufio.NewWriter(&b)}
	ew.write(1, []byte("a"))
	ew.write(300, make([]byte, 200))
	ew.end()
	f.Add(b.Bytes())
	f.Add([]byte{0})
	f.Add([]byte{1, 2, 'a'})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		er := &entryReader{r: bufio.NewReader(bytes.NewReader(in)), maxEntry: 1 << 20}
		var out bytes.Buffer
		ew := &entryWriter{w: bufio.NewWriter(&out)}
		for {
			pos, data, err := er.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
			ew.write(pos, data)
		}
		ew.end()
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("decode then encode changed %x into %x", in, out.Bytes())
		}
	})
}

// FuzzParseAuthorization: a header that parses prints back identically.
func FuzzParseAuthorization(f *testing.F) {
	k := genKey(f)
	a := &authorization{key: k.Public(), ts: 1700000000, bodyHash: sha256.Sum256(nil)}
	a.sig = k.Sign([]byte("x"))
	f.Add(a.String())
	f.Add(AuthScheme + " key=, ts=, nonce=, body=, sig=")
	f.Add(AuthScheme + " key=x, ts=01, nonce=00, body=00, sig=AA")
	f.Add("Bearer abc")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAuthorization(s)
		if err != nil {
			return
		}
		if a.String() != s {
			t.Fatalf("parse then print changed %q into %q", s, a.String())
		}
	})
}
