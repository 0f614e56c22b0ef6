package main

import (
	"errors"
	"runtime/debug"
	"testing"
)

// TestApplyServerGCPercent: the setting reaches the runtime; left at its
// default it yields to GOGC, given it does not; a value under the floor
// is a usage error and changes nothing.
func TestApplyServerGCPercent(t *testing.T) {
	prev := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	debug.SetGCPercent(300)
	if s, err := applyServerGCPercent(defaultServerGCPercent, false); err != nil || s != "100" || gcPercent() != 100 {
		t.Fatalf("the default: %q, %v, runtime %d; want Go's 100, which keeps the byte limits' promise", s, err, gcPercent())
	}
	if s, err := applyServerGCPercent(150, true); err != nil || s != "150" || gcPercent() != 150 {
		t.Fatalf("given 150: %q, %v, runtime %d", s, err, gcPercent())
	}

	t.Setenv("GOGC", "80")
	debug.SetGCPercent(80) // what the runtime read from GOGC at start
	if s, err := applyServerGCPercent(defaultServerGCPercent, false); err != nil || s != "GOGC=80" || gcPercent() != 80 {
		t.Fatalf("the default under GOGC=80: %q, %v, runtime %d; want GOGC's 80 kept", s, err, gcPercent())
	}
	if s, err := applyServerGCPercent(300, true); err != nil || s != "300" || gcPercent() != 300 {
		t.Fatalf("given 300 under GOGC=80: %q, %v, runtime %d; want the flag's", s, err, gcPercent())
	}

	var ue *usageError
	if _, err := applyServerGCPercent(10, true); !errors.As(err, &ue) || gcPercent() != 300 {
		t.Fatalf("given 10: %v, runtime %d; want a usage error and nothing changed", err, gcPercent())
	}
}
