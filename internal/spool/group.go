package spool

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
type Grouper[R GroupRequest] struct {
	MaxCount int
	MaxBytes int64
	carry    R
	carried  bool
}

// Carried returns, and forgets, the call kept from the last group.
func (g *Grouper[R]) Carried() (R, bool) {
	r, ok := g.carry, g.carried
	var zero R
	g.carry, g.carried = zero, false
	return r, ok
}

// Group returns the group that starts with first and takes, without
// waiting, the calls waiting on reqs. It may be empty when every call was
// abandoned.
func (g *Grouper[R]) Group(first R, reqs <-chan R) []R {
	var group []R
	var bytes int64
	add := func(r R) bool {
		if len(group) > 0 && (len(group) >= g.MaxCount || bytes+r.Size() > g.MaxBytes) {
			return false
		}
		if !r.Abandoned() {
			group = append(group, r)
			bytes += r.Size()
		}
		return true
	}
	add(first)
	for {
		select {
		case r := <-reqs:
			if !add(r) {
				g.carry, g.carried = r, true
				return group
			}
		default:
			return group
		}
	}
}
