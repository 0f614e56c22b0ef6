package syncer

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"cspool/internal/mailstore"
)

// The log of rejected entries (docs/OPERATING.md, "The device's log of
// rejected entries"). Every entry the device rejects is recorded in the
// store and counted in Status.Rejected; the log says which, a line each
// ("rejected entry pos=... reason=..."), for the first rejectLines of each
// reason in a window of rejectWindow. The rest of the window's are counted
// and not logged one by one: a line says when a reason's begin to be held
// back, and one line per reason, when the window ends, counts them with
// the first and last position. Before, a spool that served a million
// tiny entries signed by a stranger's key wrote a line for each, about
// 170 MB of the device's log, with no bound but the log's own length.
// The window ends at the end of the first batch applied a minute after it
// began, or of the first read of Run after that, which a long poll ends
// within its wait (Config.Wait, 5 minutes) with nothing new, and at the
// end of Run or SyncOnce, so no count is left unsaid.

// rejectLines is how many rejections of each reason a window logs in full.
const rejectLines = 5

// rejectWindow is how long a window of rejection lines lasts at least.
const rejectWindow = time.Minute

// rejectLog is the state of the window of rejection lines.
type rejectLog struct {
	mu    sync.Mutex
	since time.Time // the window's first rejection; zero: no window open
	full  map[mailstore.Reason]int
	held  map[mailstore.Reason]*heldRejections
}

// heldRejections are the rejections of one reason a window did not log.
type heldRejections struct {
	n           int
	first, last uint64
	level       slog.Level
}

// logRejected logs the rejection of the entry at pos for reason, at level,
// with attrs after its position and reason (the reason in full, which for
// an entry that did not open names more than its Reason, such as the key
// that signed it), and reports true; or, once the window logged
// rejectLines of that reason, counts it for the window's summary and
// reports false.
func (s *Syncer) logRejected(ctx context.Context, level slog.Level, reason mailstore.Reason, pos uint64, attrs ...any) bool {
	l := &s.rejects
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.since.IsZero() {
		l.since = s.now()
		l.full = map[mailstore.Reason]int{}
		l.held = map[mailstore.Reason]*heldRejections{}
	}
	if l.full[reason] < rejectLines {
		l.full[reason]++
		s.log.Log(ctx, level, "rejected entry", append([]any{"pos", pos}, attrs...)...)
		return true
	}
	h := l.held[reason]
	if h == nil {
		h = &heldRejections{first: pos, level: level}
		l.held[reason] = h
		s.log.Log(ctx, level, "more entries rejected for this reason: counted, not logged one by one, until the end of the minute",
			"reason", string(reason), "pos", pos, "logged", rejectLines)
	}
	h.n++
	h.last = pos
	h.level = max(h.level, level)
	return false
}

// endRejectWindow ends the window of rejection lines once it has lasted
// rejectWindow, or at once when now is set: each reason it held back
// rejections of is logged, one line with their count and their first and
// last positions.
func (s *Syncer) endRejectWindow(ctx context.Context, now bool) {
	l := &s.rejects
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.since.IsZero() || (!now && s.now().Sub(l.since) < rejectWindow) {
		return
	}
	reasons := make([]mailstore.Reason, 0, len(l.held))
	for r := range l.held {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		h := l.held[r]
		s.log.Log(ctx, h.level, "rejected entries not logged one by one",
			"reason", string(r), "count", h.n, "first", h.first, "last", h.last)
	}
	l.since, l.full, l.held = time.Time{}, nil, nil
}
