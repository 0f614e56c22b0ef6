package testproc

import (
	"bytes"
	"runtime/pprof"
	"testing"
	"time"
)

// HangLimit is how long a call may take before a test calls it hung: far
// beyond what it takes, under the race detector on a loaded machine too;
// a call that fails cleanly returns within it.
const HangLimit = 2 * time.Minute

// Finish runs f and returns its error, or fails the test, with every
// goroutine's stack, when f has not returned within HangLimit.
func Finish(t testing.TB, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(HangLimit):
		var b bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&b, 2)
		t.Fatalf("%s did not return within %s (hung); goroutines:\n%s", what, HangLimit, b.String())
		return nil
	}
}
