package sqlitestore

import (
	"testing"
	"time"
)

// TestSteadyNow: request records are dropped by the wall clock, but never
// by one stepped ahead of the time passed since the store opened.
func TestSteadyNow(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		elapsed time.Duration
		wall    time.Time
		want    int64
	}{
		{time.Minute, t0.Add(time.Minute), t0.Unix() + 60},
		{time.Second, t0.Add(time.Hour), t0.Unix() + 1},     // stepped forward
		{time.Minute, t0.Add(-time.Hour), t0.Unix() - 3600}, // stepped back
	} {
		if got := steadyNow(t0, c.elapsed, c.wall); got != c.want {
			t.Errorf("steadyNow(%v later, wall %v) = %d, want %d", c.elapsed, c.wall.Sub(t0), got, c.want)
		}
	}
}
