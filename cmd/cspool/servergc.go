package main

import (
	"fmt"
	"os"
	"runtime/debug"
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

// defaultServerGCPercent is the gc-percent setting's default.
const defaultServerGCPercent = 200

// minServerGCPercent bounds the setting from below: under it the collector
// would run more often than Go's default allows for.
const minServerGCPercent = 25

// gcBusyPercent is the collector's goal while the byte budgets hold
// gcBusyFrom bytes or more: the heap at 1.5 times what is live.
const gcBusyPercent = 50

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
	idle int // the percent while the budgets hold little
	held atomic.Int64
	busy atomic.Bool
	mu   sync.Mutex // serializes the switches
}

// newGCGovernor returns the governor for the percent in force, or nil
// where it has nothing to do: at gcBusyPercent or below, or GOGC=off.
func newGCGovernor(percent int) *gcGovernor {
	if percent <= gcBusyPercent {
		return nil
	}
	return &gcGovernor{idle: percent}
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
		debug.SetGCPercent(g.idle)
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
