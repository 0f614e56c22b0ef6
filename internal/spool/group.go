package spool

import "time"

// GroupRequest is one Append call waiting for a group commit.
type GroupRequest interface {
	// Size is the call's entry bytes, counted against the group's limit.
	Size() int64
	// Abandoned answers the call if its caller has given up, and says so;
	// such a call is left out of the group.
	Abandoned() bool
}

// Grouper gathers the calls of a group commit, for a store's single writer
// goroutine: a first call, then every call already waiting, up to MaxCount
// calls and MaxBytes bytes (a group always takes its first call). A call
// taken over the limits is kept for the next group.
//
// Timing: callers that a commit answered come back with their next call a
// moment later (an LMTP client sends its next message), while the calls
// that queued during the commit start the next group at once. With a few
// busy callers the groups would settle into two halves taking turns, each
// paying a full commit. So a group that holds fewer calls than are in
// flight (the last group's callers plus those that queued during its
// commit) waits up to MaxLinger, and never more than half the last
// commit's duration, for the rest to arrive; it stops waiting as soon as
// they have. A caller alone never waits.
type Grouper[R GroupRequest] struct {
	MaxCount  int
	MaxBytes  int64
	MaxLinger time.Duration // zero: a group never waits for calls to come

	carry   R
	carried bool
	last    int           // calls in the last group
	commit  time.Duration // how long the last group took to commit
}

// Carried returns, and forgets, the call kept from the last group.
func (g *Grouper[R]) Carried() (R, bool) {
	r, ok := g.carry, g.carried
	var zero R
	g.carry, g.carried = zero, false
	return r, ok
}

// Committed tells the Grouper how long the last group's commit took.
func (g *Grouper[R]) Committed(d time.Duration) { g.commit = d }

// Group returns the group that starts with first and takes the calls
// waiting on reqs, then those that come within the linger (see Grouper).
// queued says whether first was waiting already when the writer became
// free, rather than arriving after. The group may be empty when every call
// was abandoned.
func (g *Grouper[R]) Group(first R, queued bool, reqs <-chan R) []R {
	var group []R
	var bytes int64
	taken := 0
	add := func(r R) bool {
		if len(group) > 0 && (len(group) >= g.MaxCount || bytes+r.Size() > g.MaxBytes) {
			g.carry, g.carried = r, true
			return false
		}
		taken++
		if !r.Abandoned() {
			group = append(group, r)
			bytes += r.Size()
		}
		return true
	}
	add(first)
	waiting := 0 // calls that queued during the last commit
	if queued {
		waiting = 1
	}
	full := false
drain:
	for {
		select {
		case r := <-reqs:
			if !add(r) {
				full = true
				break drain
			}
			waiting++
		default:
			break drain
		}
	}
	inFlight := min(g.last+waiting, g.MaxCount)
	if linger := min(g.MaxLinger, g.commit/2); !full && taken < inFlight && linger > 0 {
		t := time.NewTimer(linger)
	wait:
		for taken < inFlight {
			select {
			case r := <-reqs:
				if !add(r) {
					break wait
				}
			case <-t.C:
				break wait
			}
		}
		t.Stop()
	}
	g.last = taken
	return group
}
