package syncer

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Budgeted is the optional capability of a Source to say the spool's
// budget of requests for the user's key (docs/API.md §2, the nonce
// budget; api.Client reads it from every answer): at most requests held at
// once, each for window, held of them held at its last answer (by all of
// the user's devices). ok is false while it is not known (a spool of an
// earlier release states none); requests < 0 means no budget at all (a
// store in this process).
type Budgeted interface {
	Budget() (requests int, window time.Duration, held int, ok bool)
}

// Budget implements Budgeted: a store in this process counts no requests.
func (StoreSource) Budget() (int, time.Duration, int, bool) { return -1, 0, 0, true }

// The budget the default paces were set for: a spool that states none
// is taken to have it (16,384 requests, each held 5 minutes and 1 s, by
// spools before HeaderBudget).
const (
	baseBudget = 16384
	baseWindow = 301 * time.Second
)

// Default paces at the base budget (Config.PollRate and AppendRate).
const (
	basePollRate    = 10
	basePollBurst   = 600
	baseAppendRate  = 12
	baseAppendBurst = 2000
)

// minPace is the slowest pace a budget sets, a second: the spool is not
// trusted, and a budget it states of one request an hour would hold
// every change a client makes (its Submit waits for the group's turn)
// for an hour, where a spool that refuses requests only has them queued
// on the device. A budget smaller than this allows gets 429s instead,
// and the device queues its changes and tries again.
const minPace = 1

// maxPaceScale is the most times the base budget's paces and bursts a
// budget sets, however large it is stated: 100 long-polls and 120 appends
// a second, after bursts of 6,000 and 20,000 (the default budget, 16384
// in 61 s, sets 49 and 59 a second after 600 and 2,000). The spool is
// not trusted on this side either: a budget of 2^31-1 requests a second,
// with long-polls answered at once with nothing in them, had a device
// read without pause, 2,500 requests a second (with the spool, 4.5 s of
// CPU in 5 s) for as long as the spool kept it up.
const maxPaceScale = 10

// paceFill is the share of the budget held beyond which a device slows
// down. At its paces one busy device holds at most about 62% of the
// budget (its appends, the read after each, and its long-polls, in the
// window), so alone it never slows; two devices changing things without
// pause at once held all of it in 24 to 44 s and waited a minute on 429
// (docs/BENCHMARKS.md, "Two devices of one user"). Beyond paceFill each
// pace is cut in proportion to what is left, to a twentieth when full:
// two such devices then settle with about 80% held.
const paceFill = 0.7

// fillFactor is how much of its paces a device keeps when held of n are
// held, in steps of a twentieth.
func fillFactor(n, held int) float64 {
	if n <= 0 {
		return 1
	}
	fill := float64(held) / float64(n)
	if fill <= paceFill {
		return 1
	}
	return max(0.05, math.Ceil((1-fill)/(1-paceFill)*20)/20)
}

// budgetSeen is a budget the paces were set for, and the share of them
// kept for how much of it was held.
type budgetSeen struct {
	requests int
	window   time.Duration
	factor   float64
}

// fitBudget sets the paces left to their defaults (Config.PollRate and
// AppendRate zero) to the spool's budget, when it states one that differs
// from the one they were set for: the same share of it as the defaults
// take of the base budget, so a spool that holds each request a minute
// instead of five lets a device make five times as many, and a spool
// configured with a smaller budget is not overrun; less of that share
// while more than paceFill of the budget is held. Without a budget (a
// store in this process) they do not bound.
func (s *Syncer) fitBudget() {
	b, ok := s.cfg.Source.(Budgeted)
	if !ok || (!s.autoPolls && !s.autoAppends) {
		return
	}
	n, w, held, ok := b.Budget()
	if !ok {
		return
	}
	f := fillFactor(n, held)
	seen := budgetSeen{n, w, f}
	s.mu.Lock()
	same := s.budget == seen
	s.budget = seen
	s.mu.Unlock()
	if same {
		return
	}
	scale := min(rateScale(n, w), maxPaceScale)
	set := func(l *rate.Limiter, r float64, burst int) {
		if l == nil {
			return
		}
		if n < 0 {
			l.SetLimit(rate.Inf)
			return
		}
		l.SetLimit(rate.Limit(max(minPace, r*scale*f)))
		l.SetBurst(max(1, int(float64(burst*min(n, maxPaceScale*baseBudget)/baseBudget)*f)))
	}
	if s.autoPolls {
		set(s.polls, basePollRate, basePollBurst)
	}
	if s.autoAppends {
		set(s.appends, baseAppendRate, baseAppendBurst)
	}
	if n >= 0 {
		s.log.Debug("paced to the spool's budget", "requests", n, "window", w, "held", held,
			"polls_per_s", basePollRate*scale*f, "appends_per_s", baseAppendRate*scale*f)
	}
}

// rateScale is how many times the base budget's sustained rate a budget
// of n requests held w each allows.
func rateScale(n int, w time.Duration) float64 {
	return (float64(n) / w.Seconds()) / (baseBudget / baseWindow.Seconds())
}
