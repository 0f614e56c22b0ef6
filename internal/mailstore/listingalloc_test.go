package mailstore

import (
	"context"
	"fmt"
	"runtime"
	"testing"
)

// TestListingAllocatesOnce: ListingAt makes each of its slices at the
// mailbox's size, read in the same snapshot, instead of growing them by
// append, which at a million messages allocated several times their 20 MB
// (each array copied into one a quarter larger as it filled) and held up
// to twice it at once; and a size is 4 bytes, not 8.
func TestListingAllocatesOnce(t *testing.T) {
	t.Parallel()
	const n = 20000
	s := openTest(t)
	var l testLog
	for i := 0; i < n; {
		var batch []Entry
		for ; i < n && len(batch) < 2000; i++ {
			batch = append(batch, l.spool(deliverCmd(simpleMessage(fmt.Sprint(i)))))
		}
		mustApply(t, s, batch...)
	}
	ctx := context.Background()
	// Once before, for what is allocated once (statements, the pool).
	if _, _, err := s.ListingAt(ctx, InboxID()); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	listing, _, err := s.ListingAt(ctx, InboxID())
	runtime.ReadMemStats(&after)
	if err != nil || len(listing.UIDs) != n {
		t.Fatalf("ListingAt: %d messages, %v; want %d", len(listing.UIDs), err, n)
	}
	// UID, flags and size 4 bytes each, the date 8.
	const per = 20
	got := after.TotalAlloc - before.TotalAlloc
	t.Logf("ListingAt of %d messages allocated %d bytes, %.1f a message", n, got, float64(got)/n)
	if limit := uint64(n*per + 64<<10); got > limit {
		t.Errorf("ListingAt of %d messages allocated %d bytes, more than %d (%d a message and 64 KiB): slices grown as they fill?", n, got, limit, per)
	}
}
