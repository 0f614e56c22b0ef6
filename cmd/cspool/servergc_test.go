package main

import (
	"errors"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

// TestApplyServerGCPercent: the setting reaches the runtime; left at its
// default it yields to GOGC, given it does not; a value under the floor
// is a usage error and changes nothing.
func TestApplyServerGCPercent(t *testing.T) {
	prev := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	debug.SetGCPercent(100)
	if p, s, err := applyServerGCPercent(defaultServerGCPercent, false); err != nil || p != 200 || s != "200" || gcPercent() != 200 {
		t.Fatalf("the default: %d %q, %v, runtime %d; want 200", p, s, err, gcPercent())
	}
	if p, s, err := applyServerGCPercent(150, true); err != nil || p != 150 || s != "150" || gcPercent() != 150 {
		t.Fatalf("given 150: %d %q, %v, runtime %d", p, s, err, gcPercent())
	}

	t.Setenv("GOGC", "80")
	debug.SetGCPercent(80) // what the runtime read from GOGC at start
	if p, s, err := applyServerGCPercent(defaultServerGCPercent, false); err != nil || p != 80 || s != "GOGC=80" || gcPercent() != 80 {
		t.Fatalf("the default under GOGC=80: %d %q, %v, runtime %d; want GOGC's 80 kept", p, s, err, gcPercent())
	}
	if p, s, err := applyServerGCPercent(300, true); err != nil || p != 300 || s != "300" || gcPercent() != 300 {
		t.Fatalf("given 300 under GOGC=80: %d %q, %v, runtime %d; want the flag's", p, s, err, gcPercent())
	}

	var ue *usageError
	if _, _, err := applyServerGCPercent(10, true); !errors.As(err, &ue) || gcPercent() != 300 {
		t.Fatalf("given 10: %v, runtime %d; want a usage error and nothing changed", err, gcPercent())
	}
}

// TestGCGovernor: the collector runs at gcBusyPercent from gcBusyFrom bytes
// held on, at the percent set again under half of it, and the governor
// keeps out of the way where the percent set is gcBusyPercent or less.
func TestGCGovernor(t *testing.T) {
	prev := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	if newGCGovernor(gcBusyPercent) != nil || newGCGovernor(-1) != nil || newGCGovernor(gcBusyPercent-10).hook() != nil {
		t.Fatalf("a governor for a percent of %d or less, or GOGC=off", gcBusyPercent)
	}
	debug.SetGCPercent(200)
	g := newGCGovernor(200)
	hold := g.hook()
	for _, step := range []struct {
		delta int64
		want  int
	}{
		{gcBusyFrom - 1, 200},            // just under
		{1, gcBusyPercent},               // at it, before the bytes are read
		{gcBusyFrom, gcBusyPercent},      // more
		{-gcBusyFrom - 1, gcBusyPercent}, // back to just under, but not under half
		{-gcBusyFrom / 2, 200},           // under half: the percent set again
		{1 << 20, 200},                   // between half and the threshold, coming up
		{-1 << 20, 200},
		{-gcBusyFrom/2 + 1, 200},
	} {
		hold(step.delta)
		if p := gcPercent(); p != step.want {
			t.Fatalf("after %+d bytes (%d held): GOGC %d; want %d", step.delta, g.held.Load(), p, step.want)
		}
	}
	if n := g.held.Load(); n != 0 {
		t.Fatalf("held %d at the end; want 0", n)
	}

	// Appends and messages taken and given back at once, on many
	// goroutines: once all is given back, the percent set.
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 200 {
				n := int64(1+i*j%7) << 20
				hold(n)
				hold(-n)
			}
		})
	}
	wg.Wait()
	if p, n := gcPercent(), g.held.Load(); p != 200 || n != 0 {
		t.Fatalf("after the goroutines: GOGC %d, held %d; want 200, 0", p, n)
	}
}

// TestGCHeadroom: after each collection the governor lowers the percent
// for while the budgets hold little so that the heap grows at most its
// headroom past what is live (never under gcBusyPercent), and raises it
// back to the percent set once little is live. Before, a server holding
// 150 MB (10,000 devices waiting over TLS) let its heap grow by 300 MB past
// it at GOGC 200, all kept (docs/BENCHMARKS.md, "Figure 5 over TLS").
func TestGCHeadroom(t *testing.T) {
	for _, c := range []struct {
		idle     int
		live     uint64
		headroom uint64
		want     int
	}{
		{200, 0, gcHeadroom, 200},
		{200, 4 << 20, gcHeadroom, 200},
		{200, 64 << 20, gcHeadroom, 200},
		{200, 150_000_000, gcHeadroom, 80},
		{200, 1 << 30, gcHeadroom, gcBusyPercent},
		{150, 100 << 20, gcHeadroom, 120},
		{300, 100 << 20, gcHeadroom, 120},
	} {
		if got := headroomPercent(c.idle, c.live, c.headroom); got != c.want {
			t.Errorf("headroomPercent(%d, %d, %d) = %d, want %d", c.idle, c.live, c.headroom, got, c.want)
		}
	}

	prev := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	debug.SetGCPercent(200)
	g := newGCGovernor(200)
	// A headroom that what this test process holds anyway (its stacks,
	// globals and heap) keeps at 200, and three times it live well under
	// gcBusyPercent.
	runtime.GC()
	g.headroom = 2*gcScanned() + 8<<20
	g.start()
	defer g.stop()
	waitPercent := func(what string, want int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); gcPercent() != want; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC %d, want %d (%d bytes scanned)", what, gcPercent(), want, gcScanned())
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	}
	live := make([][]byte, 3*g.headroom>>20)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	waitPercent("three times the headroom live", gcBusyPercent)
	hold := g.hook()
	hold(gcBusyFrom)
	hold(-gcBusyFrom)
	if p := gcPercent(); p != gcBusyPercent {
		t.Fatalf("after the budgets held much and then little again: GOGC %d, want the headroom's %d", p, gcBusyPercent)
	}
	runtime.KeepAlive(live)
	live = nil
	waitPercent("little live again", 200)
}
