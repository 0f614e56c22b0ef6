package mailstore

import (
	"bytes"
	"context"
	"errors"
	"testing"

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
