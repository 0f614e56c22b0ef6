package main

import (
	"os"
	"runtime/debug"
	"strconv"
)

// The spool server's collector.
//
// A spool server keeps little on its heap (about 4 MB with a handful of
// devices, 40 MB with 10,000 of them waiting) and allocates in proportion
// to what it serves: its SQLite driver hands over every entry it reads as
// a new byte slice, so a device's first sync of 3,000 messages of 10 KB
// allocates about 45 MB, and at Go's default (GOGC 100) the collector runs
// a dozen times a sync. GOGC 200 took a fifth to a quarter off the
// server's CPU for such a sync, but the byte limits (lmtp-max-inflight,
// append-memory, checkpoint-memory) bound what is live, not what the heap
// may grow to: under 100 hostile LMTP connections holding a 256 MiB
// budget the server's peak RSS reached 455 MiB at GOGC 200 where the
// promise (docs/DELIVERY.md, "Limits") allows 448. A floor under the heap
// instead (the collector's goal raised to 32 or 64 MiB while little is
// live) did no better: the goal follows each collection a moment late, and
// in that moment a heap that had just grown could grow by its old factor
// (docs/BENCHMARKS.md, "The spool server's collector, again"). So the
// default is Go's, and gc-percent lets an operator trade memory for CPU.

// defaultServerGCPercent is the gc-percent setting's default: Go's.
const defaultServerGCPercent = 100

// minServerGCPercent bounds the setting from below: under it the collector
// would run more often than Go's default allows for.
const minServerGCPercent = 25

// applyServerGCPercent sets the collector's goal from the gc-percent
// setting n; given says whether it was set (flag or file). Left at its
// default, a GOGC in the environment, which the runtime has applied
// already, wins. It returns the setting in force, for the log: the number,
// or "GOGC=..." when the environment's.
func applyServerGCPercent(n int, given bool) (string, error) {
	if n < minServerGCPercent {
		return "", usagef("--gc-percent %d: want %d or more (Go's default is 100; the server's %d)", n, minServerGCPercent, defaultServerGCPercent)
	}
	if !given {
		if env := os.Getenv("GOGC"); env != "" {
			return "GOGC=" + env, nil
		}
	}
	debug.SetGCPercent(n)
	return strconv.Itoa(n), nil
}
