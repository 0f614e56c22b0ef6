package mailstore

import (
	"bytes"
	"context"
	"iter"
	"os"
	"path/filepath"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// earlierParser stores what an earlier version of mimeform stored of a
// message: the parse of other bytes, which the current version reads as
// that version read the message (transform), stamped with that version.
type earlierParser struct {
	version   int
	transform func([]byte) []byte
}

func (p earlierParser) Parse(raw []byte) (int64, uint8, []byte, []byte, error) {
	return mimeform.Parser{}.Parse(p.transform(raw))
}
func (earlierParser) Forms(envelope, structure []byte) ([]byte, []byte, error) {
	return mimeform.Forms(envelope, structure)
}
func (earlierParser) BodyTexts(raw []byte, headerLen int64) []string {
	return mimeform.BodyTexts(raw, headerLen)
}
func (earlierParser) HeaderTexts(header []byte) iter.Seq2[string, []string] {
	return mimeform.HeaderTexts(header)
}
func (p earlierParser) FormsVersion() int { return p.version }

// TestUpgradeFormsOddStructures: a body stored by an earlier version of
// the forms is parsed again by the upgrade of the stored forms, and its
// structure is then the one an apply makes now: version 1 left a
// multipart's last part of fields alone out of the structure (version
// 2 lists it), and version 2 read a forwarded message's header to its
// first line that is no field, the fields after it as the message's text
// (version 3 reads past it, and finds the forwarded multipart's parts),
// and version 8 read a message/global part in base64 as a message, its
// lines of base64 a header of no field (version 9 makes it a basic
// part).
// Each earlier parse is made by the current parser of bytes it reads as
// that version read the message's, and is checked against that version's
// recorded structure.
func TestUpgradeFormsOddStructures(t *testing.T) {
	ctx := context.Background()
	if mimeform.FormsVersion < 9 {
		t.Fatalf("mimeform.FormsVersion %d: an encoded message/global part is a basic part from version 9", mimeform.FormsVersion)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "imapd", "testdata", "oddparts", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		file          string
		version       int
		transform     func([]byte) []byte
		before, after string
	}{
		{"part-fields-alone.eml", 1, func(b []byte) []byte {
			// Without the part of fields alone.
			return bytes.Replace(b, []byte("--b1\r\nContent-Type: text/plain\r\nContent-Description: fields alone\r\n"), nil, 1)
		},
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`,
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL "fields alone" "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"nested-broken-header.eml", 2, func(b []byte) []byte {
			// The forwarded header ended at the line that is no field,
			// in as many bytes and lines.
			return bytes.Replace(b, []byte("From: mid@example.org\r\nthis line has no colon\r\n"),
				[]byte("From: mid@example.org"+string(bytes.Repeat([]byte(" "), 22))+"\r\n\r\n"), 1)
		},
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 197 (NIL NIL ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 150 10 NIL NIL NIL NIL) 12 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`,
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 197 (NIL "inner" ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) NIL NIL NIL NIL NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL) "mixed" ("boundary" "i1") NIL NIL NIL) 12 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"global-base64.eml", 8, func(b []byte) []byte {
			// Read as a message, as its bytes stand; the encoding is
			// named 7bit here, in as many bytes, where version 8's
			// structure named base64.
			return bytes.Replace(b, []byte("Content-Transfer-Encoding: base64\r\n"), []byte("Content-Transfer-Encoding: 7bit  \r\n"), 1)
		},
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 35 1 NIL NIL NIL NIL)("message" "global" NIL NIL NIL "7bit" 428 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 6 NIL NIL NIL NIL) "mixed" ("boundary" "g1") NIL NIL NIL)`,
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 35 1 NIL NIL NIL NIL)("message" "global" NIL NIL NIL "base64" 428 NIL NIL NIL NIL) "mixed" ("boundary" "g1") NIL NIL NIL)`},
	} {
		path := emptyStoreFile(t)
		s, err := Open(path, earlierParser{c.version, c.transform})
		if err != nil {
			t.Fatal(err)
		}
		var l testLog
		mustApply(t, s, l.spool(&command.Command{Kind: command.Deliver, Date: 1700000000000, Body: read(c.file)}))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s, err = Open(path, mimeform.Parser{})
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := formsOf(t, s)
		if len(stored) != 1 {
			t.Fatalf("%s: %d bodies stored, want 1", c.file, len(stored))
		}
		for bid, f := range stored {
			if f.version != c.version || string(f.structureWire) != c.before {
				t.Fatalf("%s, body %d before the upgrade: version %d, structure %s; want version %d's %s", c.file, bid, f.version, f.structureWire, c.version, c.before)
			}
		}
		if n, err := s.FormsPending(ctx); err != nil || n != 1 {
			t.Fatalf("%s: FormsPending %d, %v; want 1", c.file, n, err)
		}
		if n := upgradeAll(t, s, 10); n != 1 {
			t.Errorf("%s: UpgradeForms stored %d bodies, want 1", c.file, n)
		}
		stored, now := formsOf(t, s)
		for bid, f := range stored {
			if f.version != mimeform.FormsVersion || string(f.structureWire) != c.after {
				t.Errorf("%s, body %d after the upgrade: version %d, structure %s; want version %d's %s", c.file, bid, f.version, f.structureWire, mimeform.FormsVersion, c.after)
			}
			if d := sameForms(f, now[bid]); d != "" {
				t.Errorf("%s, body %d after the upgrade: %s differ from what the parser makes now", c.file, bid, d)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
