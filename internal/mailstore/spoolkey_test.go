package mailstore

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mimeform"
)

// TestTrustSpoolKey: the first key is recorded, the same key is taken
// again, another is refused with the recorded one once something was
// applied, before that it replaces the recorded one; a database of
// version 20 records none until asked, and the record survives reopening.
func TestTrustSpoolKey(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s = reopenedFrom(t, s, path, 20)
	a, b := bytes.Repeat([]byte{1}, 64), bytes.Repeat([]byte{2}, 64)
	if err := s.TrustSpoolKey(ctx, a[:32]); err == nil {
		t.Error("a 32-byte key taken")
	}
	for i, k := range [][]byte{a, a, b} { // nothing applied: b replaces a
		if err := s.TrustSpoolKey(ctx, k); err != nil {
			t.Fatalf("key %d at position 0: %v", i, err)
		}
	}
	var l testLog
	mustApply(t, s, l.spool(deliverCmd("Subject: a\r\n\r\none\r\n")))
	var other *OtherSpoolKeyError
	if err := s.TrustSpoolKey(ctx, a); !errors.As(err, &other) || !bytes.Equal(other.Recorded, b) {
		t.Fatalf("another key after an apply: %v, want an OtherSpoolKeyError naming the recorded key", err)
	}
	s.Close()
	if s, err = Open(path, mimeform.Parser{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.TrustSpoolKey(ctx, b); err != nil {
		t.Errorf("the recorded key after reopening: %v", err)
	}
	if err := s.TrustSpoolKey(ctx, a); !errors.As(err, &other) {
		t.Errorf("another key after reopening: %v", err)
	}
}

// TestSpoolKeyUsed: the recorded spool key counts as the log's only once an
// entry signed by it is applied. Before that (nothing applied, or only the
// user's own entries and rejections) another key replaces it; after, it is
// fixed. A database of version 25 that read past position 0 keeps the rule
// it had (its key fixed), one at position 0 takes another key.
func TestSpoolKeyUsed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b, c := bytes.Repeat([]byte{1}, 64), bytes.Repeat([]byte{2}, 64), bytes.Repeat([]byte{3}, 64)
	used := func(s *Store, want bool, when string) {
		t.Helper()
		got, err := s.SpoolKeyUsed(ctx)
		if err != nil || got != want {
			t.Fatalf("%s: SpoolKeyUsed %v, %v; want %v", when, got, err, want)
		}
	}
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	used(s, false, "a new database")
	if err := s.TrustSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	var l testLog
	mustApply(t, s, l.user(mailboxCmd(command.CreateMailbox, "Work", "")(nil)))
	next := l.pos + 1
	if _, err := s.ApplyChained(ctx, nil, []Rejection{{Pos: next, Reason: Reason(entry.ErrUnknownAuthor.Error())}}, next, nil); err != nil {
		t.Fatal(err)
	}
	l.pos = next
	used(s, false, "the user's entry and a rejection applied")
	if err := s.TrustSpoolKey(ctx, b); err != nil {
		t.Fatalf("another key before one signed by the recorded key was applied: %v", err)
	}
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))))
	used(s, true, "a delivery applied")
	var other *OtherSpoolKeyError
	if err := s.TrustSpoolKey(ctx, a); !errors.As(err, &other) || !bytes.Equal(other.Recorded, b) {
		t.Fatalf("another key once used: %v, want an OtherSpoolKeyError naming %x", err, b[:4])
	}

	// Version 25, past position 0 with only the user's entries: fixed.
	s = reopenedFrom(t, s, path, 25)
	used(s, true, "migrated past position 0")
	if err := s.TrustSpoolKey(ctx, c); !errors.As(err, &other) {
		t.Fatalf("another key on a migrated database past position 0: %v", err)
	}
	// Version 25 at position 0: not used.
	path2 := emptyStoreFile(t)
	s2, err := Open(path2, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	s2 = reopenedFrom(t, s2, path2, 25)
	used(s2, false, "migrated at position 0")
}
