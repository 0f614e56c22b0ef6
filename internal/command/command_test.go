package command

import (
	"bytes"
	"errors"
	"testing"
)

func id(b byte) ID {
	var x ID
	for i := range x {
		x[i] = b
	}
	return x
}

// samples has one valid command of every kind.
func samples() []*Command {
	return []*Command{
		{Kind: Deliver, Date: 1700000000123, Body: []byte("Subject: hi\r\n\r\nhello\x00\xff")},
		{Kind: Deliver, Date: 1},
		{Kind: Append, Mailbox: "Sent", MailboxID: id(2), Flags: []string{`\Seen`, "$Label1"}, Date: 1700000000000, Body: []byte("x")},
		{Kind: SetFlags, Flags: []string{`\Flagged`}, IDs: []ID{id(1), id(3)}},
		{Kind: ClearFlags, Flags: []string{`\Seen`}, IDs: []ID{id(1)}},
		{Kind: ReplaceFlags, IDs: []ID{id(1)}},
		{Kind: ReplaceFlags, Flags: []string{"Junk"}, IDs: []ID{id(1)}},
		{Kind: Copy, Mailbox: "Archive/2026", IDs: []ID{id(4)}},
		{Kind: Move, Mailbox: "Trash", MailboxID: id(9), IDs: []ID{id(4), id(5)}},
		{Kind: Expunge, IDs: []ID{id(6)}},
		{Kind: CreateMailbox, Mailbox: "Projects/cspool"},
		{Kind: CreateMailbox, Mailbox: "Spam", SpecialUse: `\Junk`},
		{Kind: RenameMailbox, Mailbox: "a", MailboxID: id(7), NewName: "b/c"},
		{Kind: DeleteMailbox, Mailbox: "b/c"},
		{Kind: Subscribe, Mailbox: "Ünïcode 📬"},
		{Kind: Unsubscribe, Mailbox: "x", MailboxID: id(8)},
		{Kind: Checkpoint, Position: 42, Digest: bytes.Repeat([]byte{1}, 32)},
		{Kind: Expunge, IDs: []ID{id(6)}, Seen: &Head{Pos: 10, Hash: []byte{1, 2, 3}}},
		{Kind: Body, Body: []byte("Subject: put back\r\n\r\nafter a restore\r\n")},
		{Kind: Body},
		{Kind: Restoration, Position: 42, Digest: bytes.Repeat([]byte{1}, 32),
			Base: &Head{Pos: 30, Hash: bytes.Repeat([]byte{2}, 32)}, Body: []byte{0xa0}},
		{Kind: Restoration, Position: 7, Digest: bytes.Repeat([]byte{1}, 32),
			Base: &Head{Hash: make([]byte, 32)}, Body: []byte{0xa0}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, c := range samples() {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("%s: encode: %v", c.Kind, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: decode: %v", c.Kind, err)
		}
		if !Equal(c, got) {
			t.Fatalf("%s: round trip changed the command:\nwant %+v\n got %+v", c.Kind, c, got)
		}
		again, _ := Encode(got)
		if !bytes.Equal(b, again) {
			t.Fatalf("%s: re-encoding differs", c.Kind)
		}
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name string
		c    Command
		want error
	}{
		{"unknown kind", Command{Kind: 99}, ErrUnknownKind},
		{"deliver without date", Command{Kind: Deliver, Body: []byte("x")}, ErrInvalid},
		{"deliver with mailbox", Command{Kind: Deliver, Date: 1, Mailbox: "Sent"}, ErrInvalid},
		{"flags without ids", Command{Kind: SetFlags, Flags: []string{`\Seen`}}, ErrInvalid},
		{"recent is not storable", Command{Kind: SetFlags, Flags: []string{`\Recent`}, IDs: []ID{id(1)}}, ErrInvalid},
		{"bad keyword", Command{Kind: SetFlags, Flags: []string{"a b"}, IDs: []ID{id(1)}}, ErrInvalid},
		{"bad mailbox", Command{Kind: CreateMailbox, Mailbox: "a//b"}, ErrInvalid},
		{"control char", Command{Kind: CreateMailbox, Mailbox: "a\nb"}, ErrInvalid},
		{"bad special use", Command{Kind: CreateMailbox, Mailbox: "a", SpecialUse: `\Nope`}, ErrInvalid},
		{"short digest", Command{Kind: Checkpoint, Position: 1, Digest: []byte{1}}, ErrInvalid},
		{"body with a mailbox", Command{Kind: Body, Mailbox: "INBOX", Body: []byte("x")}, ErrInvalid},
		{"restoration without base", Command{Kind: Restoration, Position: 2, Digest: bytes.Repeat([]byte{1}, 32), Body: []byte{1}}, ErrInvalid},
		{"restoration without state", Command{Kind: Restoration, Position: 2, Digest: bytes.Repeat([]byte{1}, 32),
			Base: &Head{Pos: 1, Hash: bytes.Repeat([]byte{2}, 32)}}, ErrInvalid},
		{"restoration base after it", Command{Kind: Restoration, Position: 2, Digest: bytes.Repeat([]byte{1}, 32),
			Base: &Head{Pos: 3, Hash: bytes.Repeat([]byte{2}, 32)}, Body: []byte{1}}, ErrInvalid},
		{"short base hash", Command{Kind: Restoration, Position: 2, Digest: bytes.Repeat([]byte{1}, 32),
			Base: &Head{Pos: 1, Hash: []byte{2}}, Body: []byte{1}}, ErrInvalid},
		{"base on another kind", Command{Kind: Expunge, IDs: []ID{id(1)}, Base: &Head{Pos: 1, Hash: bytes.Repeat([]byte{2}, 32)}}, ErrInvalid},
	}
	for _, tc := range tests {
		if _, err := Encode(&tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(&Command{Kind: Deliver, Date: 5, Body: []byte("body")})
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"truncated body", good[:len(good)-1], ErrMalformed},
		{"extra body", append(append([]byte{}, good...), 'x'), ErrMalformed},
		// [3, 1, {}]: a future version.
		{"version 3", []byte{0x83, 0x03, 0x01, 0xa0}, ErrUnknownVersion},
		// [2, 1, {}]: a Deliver in version 2, which only Expunge and
		// DeleteMailbox take.
		{"deliver in version 2", []byte{0x83, 0x02, 0x01, 0xa0}, ErrInvalid},
		// [1, 200, {}]
		{"unknown kind", []byte{0x83, 0x01, 0x18, 0xc8, 0xa0}, ErrUnknownKind},
		// [1, 1, {7: 5}] encoded with a non-shortest integer for 5.
		{"non-canonical int", []byte{0x83, 0x01, 0x01, 0xa1, 0x07, 0x18, 0x05}, ErrMalformed},
		// [1, 13, {1: "x", 99: 0}]: unknown field.
		{"unknown field", []byte{0x83, 0x01, 0x0d, 0xa2, 0x01, 0x61, 'x', 0x18, 0x63, 0x00}, ErrMalformed},
		// [1, 13, {1: "x", 1: "y"}]: duplicate key.
		{"duplicate key", []byte{0x83, 0x01, 0x0d, 0xa2, 0x01, 0x61, 'x', 0x01, 0x61, 'y'}, ErrMalformed},
	}
	for _, tc := range tests {
		if _, err := Decode(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestBodyNotCopied(t *testing.T) {
	b, _ := Encode(&Command{Kind: Deliver, Date: 5, Body: bytes.Repeat([]byte("z"), 1000)})
	c, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if &c.Body[0] != &b[len(b)-1000] {
		t.Error("Decode copied the body")
	}
}

func TestDeriveID(t *testing.T) {
	a, b := DeriveID(id(1), 0), DeriveID(id(1), 1)
	if a == b || a == DeriveID(id(2), 0) || a != DeriveID(id(1), 0) {
		t.Error("DeriveID is not a deterministic function of (entry, index)")
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range samples() {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(c)
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("decode-encode changed the bytes:\n in %x\nout %x", b, again)
		}
	})
}

// TestVersion2 checks the commands of encoding version 2: an Expunge with
// the flags its messages must carry and a DeleteMailbox with the messages
// it may take round-trip with their version, those fields are refused in
// version 1, and no other kind is written in version 2.
func TestVersion2(t *testing.T) {
	for _, c := range []Command{
		{Kind: Expunge, Version: Version2, IDs: []ID{id(1), id(2)}, Flags: []string{`\Deleted`}},
		{Kind: Expunge, Version: Version2, IDs: []ID{id(1)}},
		{Kind: DeleteMailbox, Version: Version2, Mailbox: "a/b", MailboxID: id(3), IDs: []ID{id(1)}},
		{Kind: DeleteMailbox, Version: Version2, Mailbox: "empty", MailboxID: id(3)},
	} {
		b, err := Encode(&c)
		if err != nil {
			t.Fatalf("%s: %v", c.Kind, err)
		}
		if b[1] != Version2 {
			t.Errorf("%s: encoded as version %d, want %d", c.Kind, b[1], Version2)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Kind, err)
		}
		if got.Version != Version2 || !Equal(got, &c) {
			t.Errorf("%s: decoded %+v, want %+v", c.Kind, got, c)
		}
		v1 := c
		v1.Version = 0
		if _, err := Encode(&v1); (len(c.Flags) > 0 || (c.Kind == DeleteMailbox && len(c.IDs) > 0)) && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s in version 1 with version 2's fields: %v, want ErrInvalid", c.Kind, err)
		}
		// Equal tells the versions apart: the same fields mean another
		// rule.
		if len(c.Flags) == 0 && !(c.Kind == DeleteMailbox && len(c.IDs) > 0) && Equal(&v1, &c) {
			t.Errorf("%s: version 1 and 2 compare equal", c.Kind)
		}
	}
	for _, c := range []Command{
		{Kind: SetFlags, Version: Version2, IDs: []ID{id(1)}, Flags: []string{`\Seen`}},
		{Kind: Deliver, Version: Version2, Date: 5, Body: []byte("x")},
		{Kind: Expunge, Version: 3, IDs: []ID{id(1)}},
	} {
		if _, err := Encode(&c); err == nil {
			t.Errorf("%s in version %d encoded", c.Kind, c.Version)
		}
	}
}
