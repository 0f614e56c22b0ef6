package main

import (
	"context"
	"errors"
	"math"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"32MiB", 32 << 20},
		{"48 MiB", 48 << 20},
		{"1GiB", 1 << 30},
		{"8192KiB", 8 << 20},
		{"67108864", 64 << 20},
		{"67108864B", 64 << 20},
		{"off", math.MaxInt64},
		{"0", math.MaxInt64},
		{"auto", 0},
	} {
		got, err := parseMemoryLimit(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "32MB", "32M", "-1MiB", "1MiB", "x", "9999999999GiB", "1.5GiB"} {
		if got, err := parseMemoryLimit(bad); err == nil {
			t.Errorf("parseMemoryLimit(%q) = %d, want an error", bad, got)
		}
	}
}

// TestApplyMemoryLimit: the setting reaches the runtime; left at its
// default it yields to GOMEMLIMIT, given it does not; a bad value is a
// usage error and changes nothing.
func TestApplyMemoryLimit(t *testing.T) {
	prev, prevGC := debug.SetMemoryLimit(-1), gcPercent()
	t.Cleanup(func() { debug.SetMemoryLimit(prev); debug.SetGCPercent(prevGC) })

	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(math.MaxInt64)
	if n, err := applyMemoryLimit(defaultMemoryLimit, false); err != nil || n != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("the default: %d, %v, runtime %d; want auto (0), left to followMemoryLimit", n, err, debug.SetMemoryLimit(-1))
	}
	if n, err := applyMemoryLimit("100MiB", true); err != nil || n != 100<<20 || debug.SetMemoryLimit(-1) != 100<<20 {
		t.Fatalf("given 100MiB: %d, %v, runtime %d", n, err, debug.SetMemoryLimit(-1))
	}
	if n, err := applyMemoryLimit("off", true); err != nil || n != math.MaxInt64 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("given off: %d, %v, runtime %d", n, err, debug.SetMemoryLimit(-1))
	}
	var ue *usageError
	if _, err := applyMemoryLimit("lots", true); !errors.As(err, &ue) {
		t.Fatalf("a bad value: %v, want a usage error", err)
	}
	if debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("a bad value changed the limit to %d", debug.SetMemoryLimit(-1))
	}

	// What the environment said stays when the setting is not given.
	t.Setenv("GOMEMLIMIT", "200MiB")
	debug.SetMemoryLimit(200 << 20) // as the runtime did at start
	if n, err := applyMemoryLimit(defaultMemoryLimit, false); err != nil || n != 200<<20 || debug.SetMemoryLimit(-1) != 200<<20 {
		t.Fatalf("default with GOMEMLIMIT=200MiB: %d, %v, runtime %d; want 200 MiB", n, err, debug.SetMemoryLimit(-1))
	}
	if n, err := applyMemoryLimit("40MiB", true); err != nil || n != 40<<20 || debug.SetMemoryLimit(-1) != 40<<20 {
		t.Fatalf("given 40MiB over GOMEMLIMIT: %d, %v, runtime %d", n, err, debug.SetMemoryLimit(-1))
	}
}

// TestAutoGCPercent: the automatic limit comes with the collector's goal
// at autoGCPercent, unless GOGC is in the environment (the runtime has
// applied it then); a limit given or from GOMEMLIMIT leaves the goal as
// it is.
func TestAutoGCPercent(t *testing.T) {
	prevLimit, prevGC := debug.SetMemoryLimit(-1), gcPercent()
	t.Cleanup(func() { debug.SetMemoryLimit(prevLimit); debug.SetGCPercent(prevGC) })
	t.Setenv("GOMEMLIMIT", "")

	for _, c := range []struct {
		name, gogc, value string
		given             bool
		want              int
	}{
		{"auto", "", defaultMemoryLimit, false, autoGCPercent},
		{"auto given", "", "auto", true, autoGCPercent},
		{"auto with GOGC=200", "200", defaultMemoryLimit, false, 200},
		{"a size given", "", "100MiB", true, 100},
		{"off given", "", "off", true, 100},
	} {
		t.Setenv("GOGC", c.gogc)
		debug.SetGCPercent(100)
		if c.gogc != "" {
			debug.SetGCPercent(200) // as the runtime did at start
		}
		if _, err := applyMemoryLimit(c.value, c.given); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := gcPercent(); got != c.want {
			t.Errorf("%s: GOGC %d, want %d", c.name, got, c.want)
		}
	}
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "200MiB")
	debug.SetGCPercent(100)
	if _, err := applyMemoryLimit(defaultMemoryLimit, false); err != nil || gcPercent() != 100 {
		t.Errorf("default with GOMEMLIMIT=200MiB: %v, GOGC %d; want 100 (the limit is not auto)", err, gcPercent())
	}
	if got := memoryLimitText(0); !strings.Contains(got, "GOGC 50") {
		t.Errorf("memoryLimitText(0) = %q, want it to say GOGC 50", got)
	}
}

// TestFollowMemoryLimit: the automatic limit is 24 MiB and 32 bytes an
// entry, and follows the position as it grows until its context ends.
func TestFollowMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	if got := autoMemoryLimit(0); got != 24<<20 {
		t.Errorf("autoMemoryLimit(0) = %d, want 24 MiB", got)
	}
	if got, want := autoMemoryLimit(1_000_000), int64(24<<20+32_000_000); got != want {
		t.Errorf("autoMemoryLimit(1,000,000) = %d, want %d", got, want)
	}
	var pos atomic.Uint64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		followMemoryLimit(ctx, pos.Load, time.Millisecond)
	}()
	wait := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for debug.SetMemoryLimit(-1) != want {
			if time.Now().After(deadline) {
				t.Fatalf("limit %d, want %d", debug.SetMemoryLimit(-1), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(24 << 20)
	pos.Store(100_000)
	wait(24<<20 + 3_200_000)
	cancel()
	<-done
	pos.Store(200_000)
	time.Sleep(20 * time.Millisecond)
	if got := debug.SetMemoryLimit(-1); got != 24<<20+3_200_000 {
		t.Fatalf("after its context ended the limit moved to %d", got)
	}
}
