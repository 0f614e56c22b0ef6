package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// defaultMemoryLimit is the memory-limit setting's default: the soft
// limit the device daemon gives the Go runtime (debug.SetMemoryLimit)
// follows the log (autoMemoryLimit). With it the garbage collector keeps
// the heap near what is live instead of letting it grow to twice that
// during a first sync (docs/BENCHMARKS.md, "What the peak RSS is made
// of"). It bounds the Go runtime's memory only, not SQLite's, nor the
// binary's pages.
const defaultMemoryLimit = "auto"

// autoBase and autoPerEntry make the automatic limit: autoBase, plus
// autoPerEntry bytes for every log entry applied. The IMAP server keeps
// 21 bytes a message of a loaded mailbox on the heap (its listing), so the
// live heap grows with the mailbox: a fixed limit below it would have the
// collector run without pause. A log position counts every entry ever
// applied (flag changes and expunged messages too), at least one a
// message: the limit errs above what the mailbox needs, never below.
const (
	autoBase     = 24 << 20
	autoPerEntry = 32
)

// autoMemoryLimit is the automatic limit at log position pos.
func autoMemoryLimit(pos uint64) int64 {
	return autoBase + int64(min(pos, 1<<40))*autoPerEntry
}

// autoGCPercent is the garbage collector's GOGC under the automatic
// limit: the collector's goal is the live heap and half as much again,
// where Go's default (100) lets the heap grow to twice what is live.
// The daemon's live heap is small (about 7 MB at 100,000 messages: the
// listing, the batches in flight, a SEARCH's lists) and twice it is still
// under the limit, which so did not bind: the heap's pages stayed at
// twice the live heap through a first sync and the queries after it. At
// 50 they are 3 to 5 MB fewer, for a collection twice as often
// (docs/BENCHMARKS.md, "The collector's goal at 1.5 times the live
// heap"). A GOGC in the environment wins.
const autoGCPercent = 50

// autoInterval is how often the automatic limit follows the position.
const autoInterval = 5 * time.Second

// followMemoryLimit sets the automatic limit from position() now and every
// interval until ctx ends.
func followMemoryLimit(ctx context.Context, position func() uint64, interval time.Duration) {
	debug.SetMemoryLimit(autoMemoryLimit(position()))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			debug.SetMemoryLimit(autoMemoryLimit(position()))
		}
	}
}

// parseMemoryLimit reads a memory-limit setting: a number of bytes with
// an optional unit B, KiB, MiB or GiB (GOMEMLIMIT's form: "48MiB"), or
// "off" (or "0") for no limit, returned as math.MaxInt64 (Go's own
// default), or "auto", returned as 0.
func parseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "auto" {
		return 0, nil
	}
	if s == "off" || s == "0" {
		return math.MaxInt64, nil
	}
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("--memory-limit %q: want a size such as 32MiB, 512KiB or 1GiB (units B, KiB, MiB, GiB), auto or off", s)
	}
	if n*mult < 4<<20 {
		return 0, fmt.Errorf("--memory-limit %q: below 4MiB the daemon would do little but collect garbage", s)
	}
	return n * mult, nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit from the
// memory-limit setting value; given says whether it was set (flag or
// file). Left at its default, it yields to a GOMEMLIMIT in the
// environment, which the runtime has applied already. It returns the limit
// in force (math.MaxInt64: none), or 0 for "auto": the caller then runs
// followMemoryLimit, and the collector's goal is autoGCPercent unless
// GOGC is in the environment.
func applyMemoryLimit(value string, given bool) (int64, error) {
	if !given && os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), nil
	}
	n, err := parseMemoryLimit(value)
	if err != nil {
		return 0, usagef("%v", err)
	}
	if n != 0 {
		debug.SetMemoryLimit(n)
	} else if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(autoGCPercent)
	}
	return n, nil
}

// memoryLimitText says a limit applyMemoryLimit returned, for the log.
func memoryLimitText(n int64) string {
	switch n {
	case math.MaxInt64:
		return "off"
	case 0:
		gogc := os.Getenv("GOGC")
		if gogc == "" {
			gogc = strconv.Itoa(autoGCPercent)
		}
		return fmt.Sprintf("auto (%d MiB + %d bytes an entry, GOGC %s)", autoBase>>20, autoPerEntry, gogc)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
