package mailstore

import (
	"cspool/internal/command"
	"cspool/internal/testproc"
	"strings"

	"github.com/ncruces/go-sqlite3"

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
	testproc.SkipUnderRace(t)
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

// TestWideReadsKeepSmallCache: a listing, a FetchForms and SEARCH's scans
// of a whole large mailbox read through a page cache of scanCacheKiB, so the
// read connection's SQLite memory, which never shrinks while it is open,
// does not grow to its 8 MiB cache with pages the next read would not
// find there anyway; a narrow FetchForms keeps the cache.
func TestWideReadsKeepSmallCache(t *testing.T) {
	testproc.SkipUnderRace(t)
	t.Parallel()
	const n = scanSpan + 1000
	s := openTest(t)
	var l testLog
	for i := 0; i < n; {
		var batch []Entry
		for ; i < n && len(batch) < 5000; i++ {
			batch = append(batch, l.spool(deliverCmd(simpleMessage(fmt.Sprint(i)))))
		}
		mustApply(t, s, batch...)
	}
	ctx := context.Background()
	// The pool's one connection, so that each read below finds the
	// cache the one before left.
	s.rdb.SetMaxOpenConns(1)
	cached := func() int64 {
		var used int64
		if err := s.readRaw(ctx, func(c *sqlite3.Conn) {
			used, _, _ = c.Status(sqlite3.DBSTATUS_CACHE_USED, false)
		}); err != nil {
			t.Fatal(err)
		}
		return used
	}
	if _, _, err := s.ListingAt(ctx, InboxID()); err != nil {
		t.Fatal(err)
	}
	if used := cached(); used > 2*scanCacheKiB<<10 {
		t.Errorf("after ListingAt of %d messages the read connection caches %d KiB, more than twice %d KiB", n, used>>10, scanCacheKiB)
	}
	for _, wide := range []bool{true, false} {
		set := UIDSet{{Start: 1, Stop: n}}
		if !wide {
			set = UIDSet{{Start: 1, Stop: 5000}}
		}
		if err := s.FetchForms(ctx, InboxID(), set, WantEnvelopeWire, func(*Message) error { return nil }); err != nil {
			t.Fatal(err)
		}
		used := cached()
		t.Logf("after FetchForms of %v the read connection caches %d KiB", set, used>>10)
		if wide && used > 2*scanCacheKiB<<10 {
			t.Errorf("after FetchForms of %v the read connection caches %d KiB, more than twice %d KiB", set, used>>10, scanCacheKiB)
		}
		if !wide && used <= 2*scanCacheKiB<<10 {
			t.Errorf("after FetchForms of %v the read connection caches %d KiB: its cache was not given its size back", set, used>>10)
		}
	}
	// SEARCH's reads: a Scan of the whole mailbox and a ScanUIDs of the
	// candidates of a body search while the index is not built, each
	// reading every body (LoadRaw, as a SEARCH BODY of messages not
	// indexed does), then a narrow Fetch, which keeps its cache.
	var all, third []UID
	for u := UID(1); u <= n; u++ {
		all = append(all, u)
		if u%3 == 0 {
			third = append(third, u)
		}
	}
	reads := []struct {
		name  string
		wide  bool
		count int
		read  func(fn func(*Message) error) error
	}{
		{"Scan", true, n, func(fn func(*Message) error) error { return s.Scan(ctx, InboxID(), WantHeader, fn) }},
		{"ScanUIDs", true, n, func(fn func(*Message) error) error { return s.ScanUIDs(ctx, InboxID(), all, WantHeader, fn) }},
		{"ScanUIDs of every third", true, n / 3, func(fn func(*Message) error) error {
			return s.ScanUIDs(ctx, InboxID(), third, WantHeader, fn)
		}},
		{"Fetch 1:5000", false, 5000, func(fn func(*Message) error) error {
			return s.Fetch(ctx, InboxID(), UIDSet{{Start: 1, Stop: 5000}}, WantHeader, fn)
		}},
	}
	for _, r := range reads {
		seen := 0
		if err := r.read(func(m *Message) error {
			if r.count == n/3 && m.UID%3 != 0 {
				return fmt.Errorf("UID %d, not a candidate", m.UID)
			}
			seen++
			_, err := m.LoadRaw(ctx)
			return err
		}); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if seen != r.count {
			t.Errorf("%s gave %d messages, want %d", r.name, seen, r.count)
		}
		used := cached()
		t.Logf("after %s of %d messages, their bodies read, the read connection caches %d KiB", r.name, seen, used>>10)
		if r.wide && used > 2*scanCacheKiB<<10 {
			t.Errorf("after %s of %d messages the read connection caches %d KiB, more than twice %d KiB", r.name, seen, used>>10, scanCacheKiB)
		}
		if !r.wide && used <= 2*scanCacheKiB<<10 {
			t.Errorf("after %s of %d messages the read connection caches %d KiB: its cache was not given its size back", r.name, seen, used>>10)
		}
	}
	// The index's answer for a mailbox whose bodies are not indexed yet:
	// the list of them reads an index of every message.
	a, err := s.TextSearch(ctx, InboxID(), SearchBody, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Unindexed) != n || !a.NotIndexed(n) || a.NotIndexed(n+1) || len(a.Candidates()) != n {
		t.Errorf("TextSearch: %d unindexed, %d candidates, want %d each", len(a.Unindexed), len(a.Candidates()), n)
	}
	if used := cached(); used > 2*scanCacheKiB<<10 {
		t.Errorf("after TextSearch over %d messages not indexed the read connection caches %d KiB, more than twice %d KiB", n, used>>10, scanCacheKiB)
	}
}

// TestMailboxIdentities: MailboxIdentities gives what Mailboxes gives but
// the counts, and reads no message to give it (the IMAP server's start and
// every LIST without RETURN (STATUS) went through all of them).
func TestMailboxIdentities(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("a"))), l.spool(deliverCmd(simpleMessage("b"))),
		l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Work"}))
	all, err := s.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := s.MailboxIdentities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 2 || len(ids) != len(all) {
		t.Fatalf("MailboxIdentities: %d mailboxes, Mailboxes %d", len(ids), len(all))
	}
	for i := range all {
		want := all[i]
		want.Messages, want.Unseen, want.Size = 0, 0, 0
		if ids[i] != want {
			t.Errorf("MailboxIdentities[%d] = %+v, want %+v", i, ids[i], want)
		}
	}
	for _, detail := range queryPlan(t, s.rdb, "EXPLAIN QUERY PLAN "+mailboxIdentitiesQuery) {
		if strings.Contains(detail, "messages") {
			t.Errorf("MailboxIdentities reads the messages: %q", detail)
		}
	}
}
