package spooltest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cspool/internal/spool"
)

// testKeepSpoolKey: the first key is recorded and taken again; another
// replaces it while the store holds no log; once a log exists another is
// refused with the recorded one, which is still taken.
func (s *suite) testKeepSpoolKey(t *testing.T) {
	st := s.store(t)
	kk, ok := st.(spool.KeyKeeper)
	if !ok {
		t.Fatalf("%T is not a spool.KeyKeeper: a server started with another spool key would sign mail no device trusts", st)
	}
	ctx := context.Background()
	a, b := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64)
	if err := kk.KeepSpoolKey(ctx, a[:32]); err == nil {
		t.Error("a 32-byte key taken")
	}
	for i, k := range [][]byte{a, a, b, b} {
		if err := kk.KeepSpoolKey(ctx, k); err != nil {
			t.Fatalf("key %d on a store with no log: %v", i, err)
		}
	}
	if _, err := st.Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	var other *spool.OtherKeyError
	if err := kk.KeepSpoolKey(ctx, a); !errors.As(err, &other) || !bytes.Equal(other.Recorded, b) {
		t.Fatalf("another key once a log exists: %v, want an *OtherKeyError naming the recorded key", err)
	}
	if err := kk.KeepSpoolKey(ctx, b); err != nil {
		t.Errorf("the recorded key once a log exists: %v", err)
	}
}
