package mailstore

import (
	"bytes"
	"context"
	"iter"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// fieldsAloneMessage ends in a part of fields alone: its header runs to
// the closing delimiter line, with no blank line (RFC 2046 section
// 5.1.1).
const fieldsAloneMessage = "From: ann@example.org\r\nSubject: a part of fields alone\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
	"--b1\r\nContent-Type: text/plain\r\n\r\none\r\n" +
	"--b1\r\nContent-Type: text/plain\r\nContent-Description: fields alone\r\n--b1--\r\n"

// version1Parser stores what mimeform's version 1 stored of
// fieldsAloneMessage, whose part of fields alone that version left out:
// the parse of the message without that part, stamped version 1.
type version1Parser struct{}

func (version1Parser) Parse(raw []byte) (int64, uint8, []byte, []byte, error) {
	return mimeform.Parser{}.Parse(bytes.Replace(raw,
		[]byte("--b1\r\nContent-Type: text/plain\r\nContent-Description: fields alone\r\n"), nil, 1))
}
func (version1Parser) Forms(envelope, structure []byte) ([]byte, []byte, error) {
	return mimeform.Forms(envelope, structure)
}
func (version1Parser) BodyTexts(raw []byte, headerLen int64) []string {
	return mimeform.BodyTexts(raw, headerLen)
}
func (version1Parser) HeaderTexts(header []byte) iter.Seq2[string, []string] {
	return mimeform.HeaderTexts(header)
}
func (version1Parser) FormsVersion() int { return 1 }

// TestUpgradeFormsFieldsAlone: a body stored by version 1, whose
// structure lacks its last part of fields alone, is parsed again by the
// upgrade of the stored forms, and its structure then lists the part, as
// one applied now does (FormsVersion 2).
func TestUpgradeFormsFieldsAlone(t *testing.T) {
	ctx := context.Background()
	if mimeform.FormsVersion < 2 {
		t.Fatalf("mimeform.FormsVersion %d: the part of fields alone is of version 2", mimeform.FormsVersion)
	}
	path := emptyStoreFile(t)
	s, err := Open(path, version1Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	mustApply(t, s, l.spool(&command.Command{Kind: command.Deliver, Date: 1700000000000, Body: []byte(fieldsAloneMessage)}))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	const v1 = `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`
	const v2 = `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL "fields alone" "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`

	s, err = Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stored, _ := formsOf(t, s)
	if len(stored) != 1 {
		t.Fatalf("%d bodies stored, want 1", len(stored))
	}
	for bid, f := range stored {
		if f.version != 1 || string(f.structureWire) != v1 {
			t.Fatalf("body %d before the upgrade: version %d, structure %s; want version 1's %s", bid, f.version, f.structureWire, v1)
		}
	}
	if n, err := s.FormsPending(ctx); err != nil || n != 1 {
		t.Fatalf("FormsPending: %d, %v; want 1", n, err)
	}
	if n := upgradeAll(t, s, 10); n != 1 {
		t.Errorf("UpgradeForms stored %d bodies, want 1", n)
	}
	stored, now := formsOf(t, s)
	for bid, f := range stored {
		if f.version != mimeform.FormsVersion || string(f.structureWire) != v2 {
			t.Errorf("body %d after the upgrade: version %d, structure %s; want version %d's %s", bid, f.version, f.structureWire, mimeform.FormsVersion, v2)
		}
		if d := sameForms(f, now[bid]); d != "" {
			t.Errorf("body %d after the upgrade: %s differ from what the parser makes now", bid, d)
		}
	}
}
