package mailstore

import (
	"context"
	"testing"

	"cspool/internal/mimeform"
)

// TestStatedQuotaKept: the quota SetStatedQuota records is read back after
// the store is closed and opened again, a limit of 0 records none, and a
// database of version 28 migrates to none stated.
func TestStatedQuotaKept(t *testing.T) {
	ctx := context.Background()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	if u, l, err := s.StatedQuota(ctx); err != nil || u != 0 || l != 0 {
		t.Fatalf("new store: StatedQuota = %d, %d, %v; want 0, 0, nil", u, l, err)
	}
	if err := s.SetStatedQuota(ctx, -1, 10); err == nil {
		t.Fatal("SetStatedQuota took a usage below zero")
	}
	if err := s.SetStatedQuota(ctx, 900_000, 1_000_000); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	if u, l, err := s.StatedQuota(ctx); err != nil || u != 900_000 || l != 1_000_000 {
		t.Fatalf("reopened: StatedQuota = %d, %d, %v; want 900000, 1000000, nil", u, l, err)
	}
	if err := s.SetStatedQuota(ctx, 5, 0); err != nil {
		t.Fatal(err)
	}
	if u, l, err := s.StatedQuota(ctx); err != nil || u != 0 || l != 0 {
		t.Fatalf("none stated: StatedQuota = %d, %d, %v; want 0, 0, nil", u, l, err)
	}
	s = reopenedFrom(t, s, path, 28)
	if u, l, err := s.StatedQuota(ctx); err != nil || u != 0 || l != 0 {
		t.Fatalf("from version 28: StatedQuota = %d, %d, %v; want 0, 0, nil", u, l, err)
	}
}
