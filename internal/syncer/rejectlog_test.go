package syncer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/entry"
)

// linesOf returns the lines of log that hold msg="want".
func linesOf(log string, want string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "msg=\""+want+"\"") {
			out = append(out, line)
		}
	}
	return out
}

// TestRejectedFloodLogBounded: a spool serves a flood of entries signed by
// a stranger's key and of bytes that are no entry at all, interleaved. The
// device logs the first rejections of each reason in full, says when the
// rest begin to be held back, and at the end of the sync one line per
// reason counts them, with the first and last position; every one is still
// recorded in the store and counted in the status. Before, each rejection
// was a line of its own, so the flood's 2,000 entries wrote 2,000 lines.
// A new window, a minute on (the syncer's clock is the test's), logs the
// first of each reason in full again.
func TestRejectedFloodLogBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const flood = 1000 // of each kind
	r := newRig(t)
	var bs [][]byte
	for i := range flood {
		b, _, err := entry.Seal(msg(i), r.evil, r.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b, []byte("garbage"))
	}
	r.deliver(r.spool, msg(0))
	first, err := r.log.Append(ctx, "alice", bs)
	if err != nil {
		t.Fatal(err)
	}
	last := r.deliver(r.spool, msg(1))

	out := &lockedBuffer{}
	s, ms := r.deviceWith("a", Config{Logger: slog.New(slog.NewTextHandler(out, nil)), BatchCount: 50})
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return clock }
	syncAll(t, s)

	if st := s.Status(); st.Position != last || st.Rejected != 2*flood {
		t.Fatalf("status: position %d, %d rejected; want %d and %d", st.Position, st.Rejected, last, 2*flood)
	}
	if n, err := ms.RejectedCount(ctx); err != nil || n != 2*flood {
		t.Fatalf("the store records %d rejections (%v), want %d", n, err, 2*flood)
	}
	logged := out.String()
	full := linesOf(logged, "rejected entry")
	held := linesOf(logged, "more entries rejected for this reason: counted, not logged one by one, until the end of the minute")
	sums := linesOf(logged, "rejected entries not logged one by one")
	if len(held) != 2 {
		t.Errorf("%d lines say rejections are held back, want one for each of the two reasons:\n%s", len(held), strings.Join(held, ""))
	}
	t.Logf("%d lines in full, %d summaries for %d rejections", len(full), len(sums), 2*flood)
	if len(full) != 2*rejectLines {
		t.Errorf("%d \"rejected entry\" lines for %d rejections of two reasons, want %d:\n%s", len(full), 2*flood, 2*rejectLines, strings.Join(full, ""))
	}
	for i, line := range full {
		// The first of each reason, in the order of the log.
		if want := fmt.Sprintf(" pos=%d ", first+uint64(i)); !strings.Contains(line, want) {
			t.Errorf("line %d %q, want %q", i, line, want)
		}
	}
	wantSums := []string{
		fmt.Sprintf("reason=\"%s\" count=%d first=%d last=%d", entry.ErrUnknownAuthor, flood-rejectLines, first+2*rejectLines, last-2),
		fmt.Sprintf("reason=\"%s\" count=%d first=%d last=%d", entry.ErrCorrupt, flood-rejectLines, first+2*rejectLines+1, last-1),
	}
	if len(sums) != len(wantSums) {
		t.Fatalf("summaries:\n%s\nwant %d", strings.Join(sums, ""), len(wantSums))
	}
	for i, want := range wantSums {
		if !strings.Contains(sums[i], want) {
			t.Errorf("summary %q, want %q", sums[i], want)
		}
	}

	// The window ends at the end of the first batch a minute after it
	// began: with the clock a minute on at each look, each batch of 50
	// logs its first 5 in full and counts the other 45 (the last batch
	// holds a delivery too).
	bs = r.strangers(4 * 50)
	next, err := r.log.Append(ctx, "alice", bs)
	if err != nil {
		t.Fatal(err)
	}
	r.deliver(r.spool, msg(2)) // strangers at the head wait for one
	s.now = func() time.Time {
		clock = clock.Add(rejectWindow)
		return clock
	}
	mark := len(out.String())
	syncAll(t, s)
	logged = out.String()[mark:]
	full, sums = linesOf(logged, "rejected entry"), linesOf(logged, "rejected entries not logged one by one")
	if len(full) != 4*rejectLines || len(sums) != 4 {
		t.Fatalf("%d lines in full and %d summaries for 4 batches of 50 rejections a minute apart, want %d and 4:\n%s", len(full), len(sums), 4*rejectLines, logged)
	}
	for i, line := range sums {
		p := next + uint64(i*50)
		if want := fmt.Sprintf("count=45 first=%d last=%d", p+rejectLines, p+49); !strings.Contains(line, want) {
			t.Errorf("summary %q, want %q", line, want)
		}
	}
	if st := s.Status(); st.Rejected != 2*flood+200 || st.Position != next+200 {
		t.Errorf("status: %d rejected at position %d, want %d at %d", st.Rejected, st.Position, 2*flood+200, next+200)
	}
}

// TestRejectedWindowEndsOnAnEmptyRead: the daemon's loop ends a window of
// rejection lines at the first read a minute on even when nothing new
// comes (a long poll that ends empty), so a flood that stops has its count
// logged then, not only at the next batch or when the daemon stops. The
// syncer's clock is the test's: no count before the minute, one after.
func TestRejectedWindowEndsOnAnEmptyRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	var bs [][]byte
	for range 20 {
		bs = append(bs, []byte("garbage"))
	}
	r.deliver(r.spool, msg(0))
	if _, err := r.log.Append(ctx, "alice", bs); err != nil {
		t.Fatal(err)
	}
	last := r.deliver(r.spool, msg(1))

	out := &lockedBuffer{}
	s, _ := r.deviceWith("a", Config{Logger: slog.New(slog.NewTextHandler(out, nil)), Wait: 200 * time.Millisecond})
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	stop := run(t, s)
	defer stop()
	waitFor(t, 30*time.Second, "the flood applied", func() bool { return s.Status().Position == last })
	summary := "rejected entries not logged one by one"
	// Empty long polls before the minute's end say nothing yet.
	for range 3 {
		if _, err := r.log.Append(ctx, "alice", [][]byte{[]byte("garbage")}); err != nil {
			t.Fatal(err)
		}
		last = r.deliver(r.spool, msg(2))
		waitFor(t, 30*time.Second, "a delivery applied", func() bool { return s.Status().Position == last })
	}
	if sums := linesOf(out.String(), summary); len(sums) != 0 {
		t.Fatalf("a count before the minute's end:\n%s", strings.Join(sums, ""))
	}
	clock.Add(int64(rejectWindow))
	waitFor(t, 30*time.Second, "the count logged after an empty read a minute on", func() bool {
		return len(linesOf(out.String(), summary)) == 1
	})
	if sums := linesOf(out.String(), summary); !strings.Contains(sums[0], fmt.Sprintf("reason=\"%s\" count=18 ", entry.ErrCorrupt)) {
		t.Errorf("count %q, want 18 entries corrupt (23 rejected, 5 logged)", sums[0])
	}
}
