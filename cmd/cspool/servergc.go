package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
)

// The spool server's collector.
//
// A spool server keeps little on its heap (about 4 MB with a handful of
// devices, 40 MB with 10,000 of them waiting) and allocates in proportion
// to what it serves: its SQLite driver hands over every entry it reads as
// a new byte slice, so a device's first sync of 3,000 messages of 10 KB
// allocates about 45 MB. At Go's default (GOGC 100) the collector ran every
// 4 MB of that, a dozen times a sync, and between runs the runtime gave the
// heap's pages back to the system and faulted them in again: a quarter of
// the server's CPU while it served the sync (docs/BENCHMARKS.md, "The spool
// server's collector"). With the collector's goal at 3 times the live heap
// (GOGC 200) it runs a third as often.
//
// But the byte limits (lmtp-max-inflight, append-memory, checkpoint-memory)
// bound what is live, not how far the heap grows past it: under 100
// hostile LMTP connections holding a 256 MiB budget, the peak RSS reached
// 455 MiB at GOGC 200 where docs/DELIVERY.md ("Limits") allows 448, and
// 321 to 376 MiB at Go's 100. So while the budgets hold gcBusyFrom bytes or
// more the server runs at GOGC 50 (282 to 297 MiB), and goes back to
// gc-percent once they hold less than half that: the switch is made by the
// goroutine that takes the bytes, before it reads them, so the heap never
// grows by the larger factor over them (docs/BENCHMARKS.md, "The spool
// server's collector, again"). What the budgets hold is mostly message and
// entry bytes, which the collector does not scan: collecting more often
// costs little (8 MB messages over 4 connections: the server's CPU 1.05x).
//
// Nor is three times what is live right for a server that holds much:
// with 10,000 devices waiting over TLS, about 150 MB is live (each one's
// connection, TLS state and parked read) beside 95 MB of stacks, and at
// GOGC 200 the heap grew to 500 MB and more past it, all of it kept by the
// runtime (docs/BENCHMARKS.md, "Figure 5 over TLS"). So after each
// collection the governor lowers the goal while the budgets hold little to
// what lets the heap grow at most gcHeadroom (128 MiB) past what is live,
// never under gcBusyPercent; the percent applies to the live heap, the
// stacks and the globals together. A server that holds 4 MB collects at
// gc-percent as before, one that holds 250 MB at 50.

// defaultServerGCPercent is the gc-percent setting's default.
const defaultServerGCPercent = 200

// minServerGCPercent bounds the setting from below: under it the collector
// would run more often than Go's default allows for.
const minServerGCPercent = 25

// gcBusyPercent is the collector's goal while the byte budgets hold
// gcBusyFrom bytes or more: the heap at 1.5 times what is live.
const gcBusyPercent = 50

// gcHeadroom is how far past what is live the heap may grow between
// collections while the budgets hold little, at most.
const gcHeadroom = 128 << 20

// gcBusyFrom is what the byte budgets hold, all together, from which the
// server collects at gcBusyPercent; it goes back under half of it.
const gcBusyFrom = 32 << 20

// applyServerGCPercent sets the collector's goal from the gc-percent
// setting n; given says whether it was set (flag or file). Left at its
// default, a GOGC in the environment, which the runtime has applied
// already, wins. It returns the percent in force (-1: GOGC=off) and the
// setting for the log: the number, or "GOGC=..." when the environment's.
func applyServerGCPercent(n int, given bool) (int, string, error) {
	if n < minServerGCPercent {
		return 0, "", usagef("--gc-percent %d: want %d or more (Go's default is 100; the server's %d)", n, minServerGCPercent, defaultServerGCPercent)
	}
	if !given {
		if env := os.Getenv("GOGC"); env != "" {
			return gcPercent(), "GOGC=" + env, nil
		}
	}
	debug.SetGCPercent(n)
	return n, strconv.Itoa(n), nil
}

// gcPercent reads the collector's GOGC setting (-1: off).
func gcPercent() int {
	p := debug.SetGCPercent(-1)
	debug.SetGCPercent(p)
	return p
}

// gcGovernor switches the collector's goal between the percent set and
// gcBusyPercent by what the byte budgets hold (api.Config.MemoryHeld,
// deliver.LMTPOptions.MemoryHeld).
type gcGovernor struct {
	idle int // the percent set: the most while the budgets hold little
	held atomic.Int64
	busy atomic.Bool
	mu   sync.Mutex // serializes the switches
	// now is the percent while the budgets hold little: idle, or less
	// where that would let the heap grow more than headroom past what the
	// last collection found live (afterGC). Under mu.
	now      int
	headroom uint64
	stopped  atomic.Bool
}

// newGCGovernor returns the governor for the percent in force, or nil
// where it has nothing to do: at gcBusyPercent or below, or GOGC=off.
func newGCGovernor(percent int) *gcGovernor {
	if percent <= gcBusyPercent {
		return nil
	}
	return &gcGovernor{idle: percent, now: percent, headroom: gcHeadroom}
}

// start has the governor look at what is live after each collection
// (afterGC), until stop.
func (g *gcGovernor) start() {
	if g != nil {
		g.arm()
	}
}

// stop ends what start began, after the next collection.
func (g *gcGovernor) stop() {
	if g != nil {
		g.stopped.Store(true)
	}
}

// gcSentinel is an object made only to be collected: its cleanup runs
// after the collection that found it unreachable.
type gcSentinel struct{ _ *byte }

func (g *gcGovernor) arm() {
	runtime.AddCleanup(&gcSentinel{}, func(g *gcGovernor) {
		if !g.stopped.Load() {
			g.afterGC(gcScanned())
			g.arm()
		}
	}, g)
}

// gcScanned returns what the collector's percent applies to: the bytes the
// last collection found live on the heap, and the goroutines' stacks and
// the globals it scans (the heap's goal is that, times percent/100, past
// the live heap).
func gcScanned() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	metrics.Read(s)
	var n uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			n += v.Value.Uint64()
		}
	}
	return n
}

// afterGC sets the percent for while the budgets hold little from what the
// collector scans (gcScanned, headroomPercent), and applies it unless they
// hold much now.
func (g *gcGovernor) afterGC(scanned uint64) {
	p := headroomPercent(g.idle, scanned, g.headroom)
	g.mu.Lock()
	defer g.mu.Unlock()
	if p == g.now {
		return
	}
	g.now = p
	if !g.busy.Load() {
		debug.SetGCPercent(p)
	}
}

// headroomPercent is the percent set, idle, or less where that would let
// the heap grow more than headroom past what is live, live being what the
// collector scans: in steps of 10, never under gcBusyPercent.
func headroomPercent(idle int, live, headroom uint64) int {
	if live == 0 {
		return idle
	}
	p := headroom * 100 / live
	if p >= uint64(idle) {
		return idle
	}
	return max(gcBusyPercent, int(p/10*10))
}

// memoryHeld is told each change of the bytes the budgets hold.
func (g *gcGovernor) memoryHeld(delta int64) {
	n := g.held.Add(delta)
	if b := g.busy.Load(); b == busyAt(b, n) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.busy.Load()
	want := busyAt(b, g.held.Load())
	if want == b {
		return
	}
	if want {
		debug.SetGCPercent(gcBusyPercent)
	} else {
		debug.SetGCPercent(g.now)
	}
	g.busy.Store(want)
}

// busyAt says whether the collector should run at gcBusyPercent with n
// bytes held, busy saying whether it does.
func busyAt(busy bool, n int64) bool {
	if busy {
		return n >= gcBusyFrom/2
	}
	return n >= gcBusyFrom
}

// hook is what the budgets are told through: nil for a nil governor.
func (g *gcGovernor) hook() func(int64) {
	if g == nil {
		return nil
	}
	return g.memoryHeld
}

// gcText says the collector's setting for the log.
func gcText(setting string, g *gcGovernor) string {
	if g == nil {
		return setting
	}
	return fmt.Sprintf("%s (%d while the byte limits hold %d MiB or more)", setting, gcBusyPercent, gcBusyFrom>>20)
}
