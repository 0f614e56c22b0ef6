package mailstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// TestFetchWantEnvelopeWireAndMetadataOnly: WantEnvelopeWire gives the
// stored IMAP form where the envelope has one and the envelope where it
// has none, and with WantStructureWire a message lacking either form gets
// both decoded values; WantMetadataOnly gives what a Fetch without bits gives but the
// header length and parse status, and LoadRaw still reads the body.
func TestFetchWantEnvelopeWireAndMetadataOnly(t *testing.T) {
	t.Parallel()
	s, err := Open(filepath.Join(t.TempDir(), "mail.db"), mimeform.Parser{})
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
		if err := s.Fetch(ctx, InboxID(), UIDSet{{Start: 1, Stop: 0}}, want, func(m *Message) error {
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
	if env, err := mimeform.DecodeEnvelope(wire[1].Envelope); wire[1].EnvelopeWire != nil || err != nil || env == nil || env.From[0].Mailbox != "j\u00fc" {
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
	if got, want := string(fetch(WantStructureWire)[1].StructureWire), `("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)`; got != want {
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
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("old"))), l.spool(deliverCmd("From: J\xc3\xbcrgen <j\xc3\xbc@z.org>\r\nSubject: s\r\n\r\nx\r\n")))
	ctx := t.Context()
	forms := func(s *Store) (out []string) {
		rows, err := s.rdb.QueryContext(ctx, "SELECT quote(f.envelope), quote(st.structure) FROM bodies b LEFT JOIN forms f ON f.bid = b.bid LEFT JOIN structures st ON st.bid = b.bid ORDER BY b.bid")
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
	s = reopenedFrom(t, s, path, 8)
	if got := forms(s); !reflect.DeepEqual(got, want) {
		t.Errorf("forms after the migration:\n got  %q\n want %q", got, want)
	}
}

// TestSchema13MovesForms: a database of version 12, its IMAP forms in the
// bodies rows, has them in table forms after the migration to version 13,
// none left in bodies, and a FETCH of the forms answers as before, for a
// body with forms and for one without an envelope form; a body stored
// after the migration has its forms there too.
func TestSchema13MovesForms(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("old"))), l.spool(deliverCmd("From: J\xc3\xbcrgen <j\xc3\xbc@z.org>\r\nSubject: s\r\n\r\nx\r\n")))
	ctx := t.Context()
	fetch := func(s *Store) (out []string) {
		err := s.Fetch(ctx, InboxID(), UIDSet{{Start: 1, Stop: 0}}, WantEnvelopeWire|WantStructureWire, func(m *Message) error {
			out = append(out, fmt.Sprintf("%d %s %v | %s %v | %v %v", m.UID, m.EnvelopeWire, m.EnvelopeWire == nil,
				m.StructureWire, m.StructureWire == nil, m.Envelope != nil, m.BodyStructure != nil))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := fetch(s)
	if len(want) != 2 || !strings.Contains(want[0], `"old"`) || !strings.HasSuffix(want[1], " true |  true | true true") {
		t.Fatalf("FETCH before: %q", want)
	}
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error { return downgrade(ctx, tx, 12) }); err != nil {
		t.Fatal(err)
	}
	var inBodies int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM bodies WHERE envelope_wire IS NOT NULL").Scan(&inBodies); err != nil || inBodies != 1 {
		t.Fatalf("version 12: %d bodies with an envelope form, %v; want 1", inBodies, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, mimeform.Parser{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var version, n, envs, structs int
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil || version != SchemaVersion {
		t.Fatalf("schema version %d after opening, %v", version, err)
	}
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*), count(envelope), (SELECT count(structure) FROM structures) FROM forms").Scan(&n, &envs, &structs); err != nil || n != 2 || envs != 1 || structs != 2 {
		t.Errorf("forms after the migration: %d rows, %d envelopes, %d structures, %v; want 2, 1, 2", n, envs, structs, err)
	}
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('bodies') WHERE name LIKE '%wire'").Scan(&n); err != nil || n != 0 {
		t.Errorf("bodies keeps %d form columns after the migration, %v", n, err)
	}
	if got := fetch(s); !reflect.DeepEqual(got, want) {
		t.Errorf("FETCH after the migration:\n got  %q\n want %q", got, want)
	}
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("new"))))
	if got := fetch(s); len(got) != 3 || !strings.Contains(got[2], `"new"`) || !strings.Contains(got[2], `"text" "plain"`) {
		t.Errorf("FETCH of a body stored after the migration: %q", got)
	}
}

// TestSchema19MovesStructures: a database of version 18, the structure's
// form in forms, has it in table structures after the migration to
// version 19, one row per body and none left in forms, and FETCHes of the
// forms, BODYSTRUCTURE from the listing index among them, answer as
// before; a body stored after the migration has its row there too.
func TestSchema19MovesStructures(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("old"))), l.spool(deliverCmd("From: J\xc3\xbcrgen <j\xc3\xbc@z.org>\r\nSubject: s\r\n\r\nx\r\n")))
	ctx := t.Context()
	fetch := func(s *Store) (out []string) {
		show := func(m *Message) error {
			out = append(out, fmt.Sprintf("%d %s %v | %s %v | %v %v", m.UID, m.EnvelopeWire, m.EnvelopeWire == nil,
				m.StructureWire, m.StructureWire == nil, m.Envelope != nil, m.BodyStructure != nil))
			return nil
		}
		all := UIDSet{{Start: 1, Stop: 0}}
		for _, want := range []Want{WantEnvelopeWire | WantStructureWire, WantEnvelopeWire, WantStructureWire} {
			if err := s.Fetch(ctx, InboxID(), all, want, show); err != nil {
				t.Fatal(err)
			}
			if err := s.FetchForms(ctx, InboxID(), all, want, show); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.FetchForms(ctx, InboxID(), all, WantStructureWire|WantListing, show); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := fetch(s)
	if len(want) != 14 || !strings.Contains(want[0], `"old"`) || !strings.Contains(want[len(want)-1], `"text" "plain"`) {
		t.Fatalf("FETCH before: %q", want)
	}
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error { return downgrade(ctx, tx, 18) }); err != nil {
		t.Fatal(err)
	}
	var inForms int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(structure) FROM forms").Scan(&inForms); err != nil || inForms != 2 {
		t.Fatalf("version 18: %d forms rows with a structure, %v; want 2", inForms, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, mimeform.Parser{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var version, n, structs int
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil || version != SchemaVersion {
		t.Fatalf("schema version %d after opening, %v", version, err)
	}
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*), count(structure) FROM structures").Scan(&n, &structs); err != nil || n != 2 || structs != 2 {
		t.Errorf("structures after the migration: %d rows, %d structures, %v; want 2, 2", n, structs, err)
	}
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('forms') WHERE name = 'structure'").Scan(&n); err != nil || n != 0 {
		t.Errorf("forms keeps %d structure columns after the migration, %v", n, err)
	}
	if got := fetch(s); !reflect.DeepEqual(got, want) {
		t.Errorf("FETCH after the migration:\n got  %q\n want %q", got, want)
	}
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("new"))))
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(structure) FROM structures").Scan(&structs); err != nil || structs != 3 {
		t.Errorf("a body stored after the migration: %d structures, %v; want 3", structs, err)
	}
	if got := fetch(s); len(got) != 21 || !strings.Contains(got[len(got)-1], `"text" "plain"`) {
		t.Errorf("FETCH of a body stored after the migration: %q", got)
	}
}

// TestFetchFormsMatchesFetch: FetchForms gives, for every want it takes
// and every UID set, the messages Fetch gives with the same fields: forms
// where a body has them, decoded values where one asked for is missing
// (an 8-bit envelope), flags with keywords and without, * as the last
// UID; a mailbox that does not exist is ErrNoMailbox, and a want it does
// not take an error.
func TestFetchFormsMatchesFetch(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	var l testLog
	eight := "From: J\xc3\xbcrgen <j\xc3\xbc@z.org>\r\nSubject: s\r\n\r\nx\r\n"
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(eight)), l.spool(deliverCmd(simpleMessage("three"))),
		l.spool(deliverCmd(simpleMessage("four"))))
	ids := func() (out []command.ID) {
		if err := s.Fetch(t.Context(), InboxID(), UIDSet{{Start: 1, Stop: 0}}, 0, func(m *Message) error {
			out = append(out, m.ID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}()
	mustApply(t, s, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`, `\Flagged`, "$Work", "later"}, IDs: ids[1:3]}),
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Answered`}, IDs: ids[3:]}))
	show := func(m *Message) string {
		env, err := json.Marshal(m.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := json.Marshal(m.BodyStructure)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d %x %v %d %d %d %q %q %s %s", m.UID, m.ID, m.Flags, m.InternalDate.UnixMilli(), m.Size, m.ModSeq,
			m.EnvelopeWire, m.StructureWire, env, bs)
	}
	for _, want := range []Want{WantEnvelopeWire, WantStructureWire, WantEnvelopeWire | WantStructureWire, WantMetadataOnly} {
		for _, set := range []UIDSet{{{Start: 1, Stop: 0}}, {{Start: 2, Stop: 3}}, {{Start: 4, Stop: 0}, {Start: 1, Stop: 1}}, {{Start: 9, Stop: 0}}, {{Start: 5, Stop: 9}}} {
			var got, wantRows []string
			if err := s.Fetch(t.Context(), InboxID(), set, want, func(m *Message) error {
				wantRows = append(wantRows, show(m))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := s.FetchForms(t.Context(), InboxID(), set, want, func(m *Message) error {
				got = append(got, show(m))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, wantRows) {
				t.Errorf("want %#b, UIDs %v:\n FetchForms %q\n Fetch      %q", want, set, got, wantRows)
			}
			if len(wantRows) == 0 && set[0].Start != 5 {
				t.Errorf("want %#b, UIDs %v: no messages", want, set)
			}
		}
	}
	err := s.FetchForms(t.Context(), command.ID{9}, UIDSet{{Start: 1, Stop: 0}}, WantEnvelopeWire, func(*Message) error { return nil })
	if !errors.Is(err, ErrNoMailbox) {
		t.Errorf("FetchForms of no mailbox: %v, want ErrNoMailbox", err)
	}
	if err := s.FetchForms(t.Context(), InboxID(), UIDSet{{Start: 1, Stop: 0}}, WantEnvelope, func(*Message) error { return nil }); err == nil {
		t.Error("FetchForms with WantEnvelope: no error")
	}
}

// TestFetchFormsEndsItsTransaction: a FetchForms whose context ends
// midway returns the error, and the read connection it used (the pool
// hands the last one back first) sees what is applied after it, in its
// next FetchForms: its read transaction ended with it.
func TestFetchFormsEndsItsTransaction(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))))
	ctx, cancel := context.WithCancel(t.Context())
	err := s.FetchForms(ctx, InboxID(), UIDSet{{Start: 1, Stop: 0}}, WantEnvelopeWire, func(*Message) error {
		cancel()
		return nil
	})
	if err == nil {
		t.Fatal("FetchForms with its context ended midway: no error")
	}
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("three"))))
	for range 3 {
		n := 0
		if err := s.FetchForms(t.Context(), InboxID(), UIDSet{{Start: 1, Stop: 0}}, WantEnvelopeWire, func(*Message) error {
			n++
			return nil
		}); err != nil || n != 3 {
			t.Fatalf("FetchForms after one ended midway: %d messages, %v; want 3", n, err)
		}
	}
}

// TestFetchFormsListing: WantListing gives the UID, flags (keywords
// among them), internal date and size Fetch gives, for every UID set, and
// leaves ID and ModSeq zero; its query reads the index messages_listing
// alone (SQLite's plan names it as covering), not a row of the table per
// message, also in a database of schema 13 migrated to 14. Other bits
// with it are refused.
func TestFetchFormsListing(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	s = reopenedFrom(t, s, path, 13)
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))),
		l.spool(deliverCmd(simpleMessage("three"))), l.spool(deliverCmd(simpleMessage("four"))))
	var ids []command.ID
	if err := s.Fetch(t.Context(), InboxID(), UIDSet{{Start: 1, Stop: 0}}, 0, func(m *Message) error {
		ids = append(ids, m.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`, "$Work", "later"}, IDs: ids[1:3]}),
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Answered`}, IDs: ids[3:]}))
	show := func(m *Message) string {
		return fmt.Sprintf("%d %v %d %d", m.UID, m.Flags, m.InternalDate.UnixMilli(), m.Size)
	}
	for _, set := range []UIDSet{{{Start: 1, Stop: 0}}, {{Start: 2, Stop: 3}}, {{Start: 4, Stop: 0}, {Start: 1, Stop: 1}}, {{Start: 5, Stop: 9}}} {
		var got, want []string
		if err := s.Fetch(t.Context(), InboxID(), set, WantMetadataOnly, func(m *Message) error {
			want = append(want, show(m))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.FetchForms(t.Context(), InboxID(), set, WantMetadataOnly|WantListing, func(m *Message) error {
			got = append(got, show(m))
			if m.ID != (command.ID{}) || m.ModSeq != 0 {
				t.Errorf("UID %d: ID %x, modseq %d; want both zero", m.UID, m.ID, m.ModSeq)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("UIDs %v:\n listing %q\n Fetch   %q", set, got, want)
		}
	}
	inbox := InboxID()
	plan := queryPlan(t, s.rdb, "EXPLAIN QUERY PLAN "+formsQuery(WantMetadataOnly|WantListing), inbox[:], 1, 4)
	if !strings.Contains(strings.Join(plan, "\n"), "USING COVERING INDEX messages_listing") {
		t.Errorf("the listing's plan reads more than the index:\n%s", strings.Join(plan, "\n"))
	}
	for _, bad := range []Want{WantListing, WantListing | WantMetadataOnly | WantStructureWire, WantListing | WantMetadataOnly | WantEnvelopeWire} {
		if err := s.FetchForms(t.Context(), InboxID(), UIDSet{{Start: 1, Stop: 0}}, bad, func(*Message) error { return nil }); err == nil {
			t.Errorf("FetchForms with %#b: no error", bad)
		}
	}
}

// TestFetchFormsStructureListing: WantEnvelopeWire, WantStructureWire or
// both with WantListing give every message the UID, flags, date, size,
// envelope and body structure (their IMAP forms, or the stored values
// where the body lacks a form asked for) that the same want without
// WantListing gives, for every UID set, over a mailbox with expunged
// gaps, keywords, a body two messages share, bodies without a form (8-bit
// fields, a forms or structures row whose form is NULL, a body without a
// forms or structures row), and leave ID and ModSeq zero; their plans
// read the messages from the covering index messages_listing, no row of
// the table, and forms and structures by rowid.
func TestFetchFormsStructureListing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := Open(emptyStoreFile(t), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bodies := []string{
		"From: a@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n--b1\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n" +
			"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\r\nAAEC\r\n--b1--\r\n",
		"From: a@example.org\r\nSubject: 8-bit name\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; name=\"gr\xc3\xbc\xc3\x9fe.txt\"\r\n\r\nx\r\n",
		"From: a@example.org\r\nSubject: bad mime\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n",
		"no header at all\r\n",
	}
	var l testLog
	var batch []Entry
	for i := range 40 {
		body := simpleMessage(fmt.Sprintf("m%d", i))
		switch {
		case i%5 == 1:
			body = bodies[(i/5)%len(bodies)]
		case i == 30:
			body = simpleMessage("m3") // shares message 4's body
		}
		c := deliverCmd(body)
		if i == 30 {
			c.Date += DuplicateWindow.Milliseconds() + 1 // not a retry of message 4
		}
		batch = append(batch, l.spool(c))
	}
	mustApply(t, s, batch...)
	var ids []command.ID
	var bids []int64
	if err := s.Fetch(ctx, InboxID(), UIDSet{{Start: 1, Stop: 0}}, 0, func(m *Message) error {
		ids, bids = append(ids, m.ID), append(bids, m.bodyID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`, "$Work"}, IDs: ids[5:9]}),
		l.user(&command.Command{Kind: command.Expunge, IDs: []command.ID{ids[2], ids[10], ids[11], ids[12], ids[39]}}))
	// Message 15's body loses its structures row, message 20's its
	// structure's form; message 25's its forms row, message 35's its
	// envelope's form.
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		for _, q := range []struct {
			sql string
			bid int64
		}{{"DELETE FROM structures WHERE bid = ?", bids[14]}, {"UPDATE structures SET structure = NULL WHERE bid = ?", bids[19]},
			{"DELETE FROM forms WHERE bid = ?", bids[24]}, {"UPDATE forms SET envelope = NULL WHERE bid = ?", bids[34]}} {
			if _, err := tx.ExecContext(ctx, q.sql, q.bid); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	show := func(m *Message) string {
		return fmt.Sprintf("%d %v %d %d forms %q %q stored %q %q", m.UID, m.Flags, m.InternalDate.UnixMilli(), m.Size,
			m.EnvelopeWire, m.StructureWire, m.Envelope, m.BodyStructure)
	}
	inbox := InboxID()
	for _, form := range []Want{WantStructureWire, WantEnvelopeWire, WantEnvelopeWire | WantStructureWire} {
		forms, stored := 0, 0
		for _, set := range []UIDSet{{{Start: 1, Stop: 0}}, {{Start: 2, Stop: 13}}, {{Start: 30, Stop: 0}, {Start: 1, Stop: 1}}, {{Start: 40, Stop: 49}}, {{Start: 3, Stop: 3}}} {
			var got, want []string
			if err := s.FetchForms(ctx, InboxID(), set, form, func(m *Message) error {
				want = append(want, show(m))
				if m.StructureWire != nil || m.EnvelopeWire != nil {
					forms++
				} else {
					stored++
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := s.FetchForms(ctx, InboxID(), set, form|WantListing, func(m *Message) error {
				got = append(got, show(m))
				if m.ID != (command.ID{}) || m.ModSeq != 0 {
					t.Errorf("%#b, UID %d: ID %x, modseq %d; want both zero", form, m.UID, m.ID, m.ModSeq)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%#b, UIDs %v:\n listing %q\n forms   %q", form, set, got, want)
			}
		}
		if forms == 0 || stored < 3 {
			t.Errorf("%#b: %d messages with a form, %d without; want both kinds", form, forms, stored)
		}
		plan := queryPlan(t, s.rdb, "EXPLAIN QUERY PLAN "+formsQuery(form|WantListing), inbox[:], 1, 40)
		p := strings.Join(plan, "\n")
		if !strings.Contains(p, "USING COVERING INDEX messages_listing") ||
			(form&WantStructureWire != 0) != strings.Contains(p, "st USING INTEGER PRIMARY KEY") ||
			(form&WantEnvelopeWire != 0) != strings.Contains(p, "f USING INTEGER PRIMARY KEY") {
			t.Errorf("%#b: the plan reads more than the index, forms and structures:\n%s", form, p)
		}
	}
}
