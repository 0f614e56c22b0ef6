package mailstore

import (
	"database/sql"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestFetchWantEnvelopeWireAndMetadataOnly: WantEnvelopeWire gives the
// stored IMAP form where the envelope has one and the envelope where it
// has none, and with WantStructureWire a message lacking either form gets
// both decoded values; WantMetadataOnly gives what a Fetch without bits gives but the
// header length and parse status, and LoadRaw still reads the body.
func TestFetchWantEnvelopeWireAndMetadataOnly(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "mail.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var l testLog
	plain := simpleMessage("plain")
	eight := "From: J\xc3\xbcrgen <j\xc3\xbc@z.org>\r\nSubject: s\r\n\r\nx\r\n"
	mustApply(t, s, l.spool(deliverCmd(plain)), l.spool(deliverCmd(eight)))
	ctx := t.Context()
	fetch := func(want Want) []*Message {
		var out []*Message
		if err := s.Fetch(ctx, InboxID(), imap.UIDSet{{Start: 1, Stop: 0}}, want, func(m *Message) error {
			out = append(out, m)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(out) != 2 {
			t.Fatalf("want %b: %d messages", want, len(out))
		}
		return out
	}
	wire := fetch(WantEnvelopeWire)
	want := `(NIL "plain" ((NIL NIL "a" "example.org")) ((NIL NIL "a" "example.org")) ((NIL NIL "a" "example.org")) ((NIL NIL "b" "example.org")) NIL NIL NIL "<plain@example.org>")`
	if string(wire[0].EnvelopeWire) != want || wire[0].Envelope != nil {
		t.Errorf("plain: IMAP form %q, envelope %v; want %q alone", wire[0].EnvelopeWire, wire[0].Envelope, want)
	}
	if wire[1].EnvelopeWire != nil || wire[1].Envelope == nil || wire[1].Envelope.From[0].Mailbox != "j\u00fc" {
		t.Errorf("8-bit: IMAP form %q, envelope %+v; want the envelope alone", wire[1].EnvelopeWire, wire[1].Envelope)
	}

	// Both forms: the 8-bit message has a structure form but no envelope
	// form, so it gets both decoded values and no form.
	both := fetch(WantEnvelopeWire | WantStructureWire)
	if both[0].EnvelopeWire == nil || both[0].StructureWire == nil || both[0].Envelope != nil || both[0].BodyStructure != nil {
		t.Errorf("plain, both forms: %q %q %v %v", both[0].EnvelopeWire, both[0].StructureWire, both[0].Envelope, both[0].BodyStructure)
	}
	if both[1].EnvelopeWire != nil || both[1].StructureWire != nil || both[1].Envelope == nil || both[1].BodyStructure == nil {
		t.Errorf("8-bit, both forms: %q %q %v %v", both[1].EnvelopeWire, both[1].StructureWire, both[1].Envelope, both[1].BodyStructure)
	}
	if got, want := string(fetch(WantStructureWire)[1].StructureWire), `("text" "plain" NIL NIL NIL "7bit" 3 1 NIL NIL NIL NIL)`; got != want {
		t.Errorf("8-bit: structure form %q, want %q", got, want)
	}

	all, lean := fetch(0), fetch(WantMetadataOnly)
	for i := range all {
		a, b := *all[i], *lean[i]
		if b.HeaderLen != 0 || b.Parse != 0 {
			t.Errorf("message %d: metadata only gave header length %d, parse %d", i+1, b.HeaderLen, b.Parse)
		}
		a.HeaderLen, a.Parse = 0, 0
		a.loader, b.loader = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Errorf("message %d: metadata only %+v, want %+v", i+1, b, a)
		}
		raw, err := lean[i].LoadRaw(ctx)
		if err != nil || string(raw) != []string{plain, eight}[i] {
			t.Errorf("message %d: LoadRaw %q, %v", i+1, raw, err)
		}
	}
}

// TestSchema10FillsWireForms: a database from before version 9 (its
// bodies without IMAP forms) gets on opening the forms apply gives a body
// now, and keeps none where the envelope has none.
func TestSchema10FillsWireForms(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("old"))), l.spool(deliverCmd("From: J\xc3\xbcrgen <j\xc3\xbc@z.org>\r\nSubject: s\r\n\r\nx\r\n")))
	ctx := t.Context()
	forms := func(s *Store) (out []string) {
		rows, err := s.rdb.QueryContext(ctx, "SELECT quote(envelope_wire), quote(structure_wire) FROM bodies ORDER BY bid")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var e, b string
			if err := rows.Scan(&e, &b); err != nil {
				t.Fatal(err)
			}
			out = append(out, e, b)
		}
		return out
	}
	want := forms(s)
	if len(want) != 4 || want[0] == "NULL" || want[1] == "NULL" || want[2] != "NULL" || want[3] == "NULL" {
		t.Fatalf("forms after apply: %q", want)
	}
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error { return downgrade(ctx, tx, 8) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := forms(s); !reflect.DeepEqual(got, want) {
		t.Errorf("forms after the migration:\n got  %q\n want %q", got, want)
	}
}
