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
// allocates about 45 MB. At Go's default (GOGC 100) the collector ran every
// 4 MB of that, a dozen times a sync, and between runs the runtime gave the
// heap's pages back to the system and faulted them in again: a quarter of
// the server's CPU while it served the sync (docs/BENCHMARKS.md, "The spool
// server's collector"). With the collector's goal at 3 times the live heap
// (GOGC 200) it runs a third as often; the heap of a server with 10,000
// devices waiting grew by 30 to 47 MB (docs/BENCHMARKS.md).

// defaultServerGCPercent is the gc-percent setting's default.
const defaultServerGCPercent = 200

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
