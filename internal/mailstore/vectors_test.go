package mailstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

var updateVectors = flag.Bool("update", false, "rewrite testdata/vectors/snapshot.json")

const snapshotVectors = "../../testdata/vectors/snapshot.json"

// snapshotVector is one frozen checkpoint state; docs/FORMAT.md §4 and §5
// explain it. State is the snapshot in JSON, byte strings in hex, for a
// reader without Go; Encoding is the hex of its one encoding.
type snapshotVector struct {
	Name     string    `json:"name"`
	State    snapState `json:"state"`
	Encoding string    `json:"encoding"`
}

type snapState struct {
	Version         uint64        `json:"version"`
	Position        uint64        `json:"position"`
	NextUIDValidity uint32        `json:"next_uidvalidity"`
	Mailboxes       []snapMailbox `json:"mailboxes"`
	Subscriptions   []string      `json:"subscriptions"`
	Keywords        []string      `json:"keywords"`
	Messages        []snapMessage `json:"messages"`
	Entries         []snapEntry   `json:"entries"`
	Chain           string        `json:"chain,omitempty"`
	Superseded      []snapEntry   `json:"superseded,omitempty"`
}

type snapMailbox struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	SpecialUse  string `json:"special_use"`
	UIDValidity uint32 `json:"uidvalidity"`
	UIDNext     uint32 `json:"uidnext"`
	ModSeq      uint64 `json:"highest_modseq"`
}

type snapMessage struct {
	ID       string `json:"id"`
	Mailbox  uint32 `json:"mailbox"`
	UID      uint32 `json:"uid"`
	Flags    uint8  `json:"flags"`
	Keywords string `json:"keywords"`
	Date     int64  `json:"date"`
	Size     int64  `json:"size"`
	ModSeq   uint64 `json:"modseq"`
	Body     uint64 `json:"body"`
	Digest   string `json:"digest"`
}

type snapEntry struct {
	ID  string `json:"id"`
	Pos uint64 `json:"pos"`
}

func stateOf(sn *Snapshot) snapState {
	entries := func(b []byte) []snapEntry {
		var out []snapEntry
		for ; len(b) >= 24; b = b[24:] {
			out = append(out, snapEntry{hex.EncodeToString(b[:16]), binary.BigEndian.Uint64(b[16:24])})
		}
		return out
	}
	st := snapState{Version: sn.Version, Position: sn.Position, NextUIDValidity: sn.NextUIDValidity,
		Subscriptions: sn.Subscriptions, Keywords: sn.Keywords, Entries: entries(sn.Entries),
		Chain: hex.EncodeToString(sn.Chain), Superseded: entries(sn.Superseded)}
	for _, mb := range sn.Mailboxes {
		st.Mailboxes = append(st.Mailboxes, snapMailbox{hex.EncodeToString(mb.ID), mb.Name, mb.SpecialUse, mb.UIDValidity, mb.UIDNext, mb.ModSeq})
	}
	for _, m := range sn.Messages {
		st.Messages = append(st.Messages, snapMessage{hex.EncodeToString(m.ID), m.Mailbox, m.UID, m.Flags, m.Keywords,
			m.Date, m.Size, m.ModSeq, m.Body, hex.EncodeToString(m.Digest)})
	}
	return st
}

func vid(first, last byte) []byte {
	id := make([]byte, 16)
	id[0], id[15] = first, last
	return id
}

func entryRecords(recs ...snapEntry) []byte {
	var b []byte
	for _, r := range recs {
		id, _ := hex.DecodeString(r.ID)
		b = binary.BigEndian.AppendUint64(append(b, id...), r.Pos)
	}
	return b
}

func digestOf(s string) []byte { d := sha256.Sum256([]byte(s)); return d[:] }

// initialMailboxes are the six every store starts with (MAILSTORE.md).
func initialMailboxes() []SnapMailbox {
	var out []SnapMailbox
	for i, n := range []string{"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} {
		use := map[string]string{"Sent": `\Sent`, "Drafts": `\Drafts`, "Trash": `\Trash`, "Junk": `\Junk`, "Archive": `\Archive`}[n]
		out = append(out, SnapMailbox{ID: vid(0, byte(i+1)), Name: n, SpecialUse: use, UIDValidity: uint32(i + 1), UIDNext: 1})
	}
	return out
}

// vectorSnapshots are the frozen states. Changing one changes the format:
// never edit them to make the test pass.
func vectorSnapshots() []struct {
	name string
	sn   *Snapshot
} {
	one := initialMailboxes()
	one[0].UIDNext, one[0].ModSeq = 2, 1

	many := initialMailboxes()
	many[0].UIDNext, many[0].ModSeq = 4, 4294967301
	many[5].UIDNext, many[5].ModSeq = 2, 300
	many = append(many, SnapMailbox{ID: vid(0x7f, 0x07), Name: "Projekte/Übersicht", UIDValidity: 7, UIDNext: 1 << 20, ModSeq: 70000})
	return []struct {
		name string
		sn   *Snapshot
	}{
		{"one delivery in INBOX", &Snapshot{
			Version: 1, Position: 1, NextUIDValidity: 7, Mailboxes: one,
			Subscriptions: []string{"Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"},
			Keywords:      []string{},
			Messages: []SnapMessage{{ID: vid(0xa0, 0xa0), Mailbox: 0, UID: 1, Date: 1764000000000, Size: 73, ModSeq: 1, Body: 1,
				Digest: digestOf("From: a@example.org\r\nTo: alice@example.org\r\nSubject: vector\r\n\r\nHello.\r\n")}},
			Entries: entryRecords(snapEntry{"a00000000000000000000000000000a0", 1}),
		}},
		{"flags, keywords, a mailbox of its own, chain and superseded entries", &Snapshot{
			Version: 1, Position: 4294967301, NextUIDValidity: 8, Mailboxes: many,
			Subscriptions: []string{"INBOX", "Projekte/Übersicht", "gone"},
			Keywords:      []string{"$Important", "later"},
			Messages: []SnapMessage{
				{ID: vid(0x01, 0x01), Mailbox: 0, UID: 1, Flags: 1 | 4, Keywords: "$Important later", Date: -1000, Size: 5,
					ModSeq: 4294967301, Body: 3, Digest: digestOf("first")},
				{ID: vid(0x02, 0x02), Mailbox: 5, UID: 1, Flags: 16, Date: 1764000000000, Size: 6, ModSeq: 300, Body: 300,
					Digest: digestOf("second")},
				{ID: vid(0x03, 0x03), Mailbox: 0, UID: 3, Keywords: "later", Date: 0, Size: 5, ModSeq: 70000, Body: 3,
					Digest: digestOf("first")},
			},
			Entries: entryRecords(
				snapEntry{"01000000000000000000000000000001", 3},
				snapEntry{"02000000000000000000000000000002", 300},
				snapEntry{"03000000000000000000000000000003", 70000},
				snapEntry{"0f00000000000000000000000000000f", 4294967301},
			),
			Chain:      bytes.Repeat([]byte{0xc4}, 32),
			Superseded: entryRecords(snapEntry{"0e00000000000000000000000000000e", 4294967400}),
		}},
	}
}

// TestCheckpointVectors holds the checkpoint state encoding (docs/FORMAT.md
// §5) to frozen bytes: each fixed state encodes to its vector, the vector
// decodes to the state, and the state's JSON form in the file is that state.
func TestCheckpointVectors(t *testing.T) {
	t.Parallel()
	var want []snapshotVector
	for _, v := range vectorSnapshots() {
		b, err := EncodeSnapshot(v.sn)
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		want = append(want, snapshotVector{Name: v.name, State: stateOf(v.sn), Encoding: hex.EncodeToString(b)})
	}
	if *updateVectors {
		out, err := json.MarshalIndent(want, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snapshotVectors, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(snapshotVectors)
	if err != nil {
		t.Fatal(err)
	}
	var got []snapshotVector
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("%s: %v", filepath.Base(snapshotVectors), err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d vectors in the file, want %d", len(got), len(want))
	}
	for i, v := range vectorSnapshots() {
		if got[i].Name != want[i].Name {
			t.Errorf("vector %d is %q, want %q", i, got[i].Name, want[i].Name)
		}
		if got[i].Encoding != want[i].Encoding {
			t.Errorf("%s: encoding\n%s\nwant (frozen)\n%s", v.name, want[i].Encoding, got[i].Encoding)
		}
		if !reflect.DeepEqual(got[i].State, want[i].State) {
			t.Errorf("%s: the file's state\n%+v\nis not the fixed one\n%+v", v.name, got[i].State, want[i].State)
		}
		raw, _ := hex.DecodeString(got[i].Encoding)
		sn, err := DecodeSnapshot(raw)
		if err != nil {
			t.Errorf("%s: the vector does not decode: %v", v.name, err)
			continue
		}
		if !reflect.DeepEqual(stateOf(sn), stateOf(v.sn)) {
			t.Errorf("%s: decodes to\n%+v\nwant\n%+v", v.name, stateOf(sn), stateOf(v.sn))
		}
		checkSnapshotByHand(t, v.name, raw)
	}
}

// checkSnapshotByHand reads an encoding with a generic CBOR decoder, as a
// second implementation following docs/FORMAT.md §5 would: a map with the
// integer keys of the table, arrays of the documented lengths.
func checkSnapshotByHand(t *testing.T, name string, raw []byte) {
	t.Helper()
	var m map[uint64]any
	if err := cbor.Unmarshal(raw, &m); err != nil {
		t.Errorf("%s: not a CBOR map with integer keys: %v", name, err)
		return
	}
	var keys []uint64
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range []uint64{1, 2, 3, 4, 5, 6, 7, 8} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: key %d missing (keys %v)", name, k, keys)
		}
	}
	if m[1] != uint64(1) {
		t.Errorf("%s: version %v, want 1", name, m[1])
	}
	for _, mb := range m[4].([]any) {
		if a, ok := mb.([]any); !ok || len(a) != 6 {
			t.Errorf("%s: a mailbox is %v, want an array of 6", name, mb)
		}
	}
	for _, msg := range m[7].([]any) {
		if a, ok := msg.([]any); !ok || len(a) != 10 {
			t.Errorf("%s: a message is %v, want an array of 10", name, msg)
		}
	}
	if e, ok := m[8].([]byte); !ok || len(e)%24 != 0 {
		t.Errorf("%s: entries %T of %d bytes, want a byte string of 24·n", name, m[8], len(m[8].([]byte)))
	}
}

// TestSnapshotOneEncoding: a state has one encoding, so the decoder refuses
// the other ways of writing it (null for an empty list, another order).
func TestSnapshotOneEncoding(t *testing.T) {
	t.Parallel()
	for name, b := range oneEncodingForms(t) {
		if name == "" {
			if _, err := DecodeSnapshot(b); err != nil {
				t.Fatalf("the base state does not round-trip through a generic decoder: %v", err)
			}
			continue
		}
		t.Run(name, func(t *testing.T) {
			if sn, err := DecodeSnapshot(b); !errors.Is(err, ErrSnapshot) {
				t.Errorf("decoded to %+v, %v; want ErrSnapshot", sn, err)
			}
		})
	}
}

// oneEncodingCases are oneEncodingForms' encodings.
func oneEncodingCases(t *testing.T) [][]byte {
	var out [][]byte
	for _, b := range oneEncodingForms(t) {
		out = append(out, b)
	}
	return out
}

// oneEncodingForms are a vector state's encoding through a generic
// encoder (named ""), and forms of it no state encodes to, by name.
func oneEncodingForms(t *testing.T) map[string][]byte {
	base := vectorSnapshots()[1].sn
	enc := func(mod func(m map[uint64]any)) []byte {
		raw, err := EncodeSnapshot(base)
		if err != nil {
			t.Fatal(err)
		}
		var m map[uint64]any
		if err := cbor.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		mod(m)
		em, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			t.Fatal(err)
		}
		out, err := em.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := map[string][]byte{"": enc(func(map[uint64]any) {})}
	swap := func(a []any, i, j int) []any { a = slices.Clone(a); a[i], a[j] = a[j], a[i]; return a }
	for _, c := range []struct {
		name string
		mod  func(m map[uint64]any)
	}{
		{"null keywords", func(m map[uint64]any) { m[6] = nil }},
		{"null subscriptions", func(m map[uint64]any) { m[5] = nil }},
		{"null messages", func(m map[uint64]any) { m[7] = nil }},
		{"null entries", func(m map[uint64]any) { m[8] = nil }},
		{"empty superseded present", func(m map[uint64]any) { m[10] = []byte{} }},
		{"empty chain present", func(m map[uint64]any) { m[9] = []byte{} }},
		{"null chain", func(m map[uint64]any) { m[9] = nil }},
		{"unknown key", func(m map[uint64]any) { m[11] = uint64(1) }},
		{"key 3 missing", func(m map[uint64]any) { delete(m, 3) }},
		{"mailboxes out of order", func(m map[uint64]any) { m[4] = swap(m[4].([]any), 1, 2) }},
		{"subscriptions out of order", func(m map[uint64]any) { m[5] = swap(m[5].([]any), 0, 1) }},
		{"keywords out of order", func(m map[uint64]any) { m[6] = swap(m[6].([]any), 0, 1) }},
		{"messages out of order", func(m map[uint64]any) { m[7] = swap(m[7].([]any), 0, 1) }},
		{"a subscription twice", func(m map[uint64]any) { s := m[5].([]any); m[5] = append([]any{s[0]}, s...) }},
	} {
		out[c.name] = enc(c.mod)
	}
	return out
}
