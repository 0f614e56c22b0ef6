package api

import (
	"testing"
	"time"
)

// TestSlottedWait: a long-poll's wait that may run for two seconds or more
// ends on a whole second of the clock, up to a second before it has run
// for all it may and never after; a shorter one runs for all of it.
func TestSlottedWait(t *testing.T) {
	at := func(ms int) time.Time {
		return time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC).Add(time.Duration(ms) * time.Millisecond)
	}
	cases := []struct {
		now  time.Time
		d    time.Duration
		want time.Duration
	}{
		{at(300), 300 * time.Second, 299700 * time.Millisecond},
		{at(0), 300 * time.Second, 300 * time.Second},
		{at(999), 300 * time.Second, 299001 * time.Millisecond},
		{at(300), 2 * time.Second, 1700 * time.Millisecond},
		{at(300), 1999 * time.Millisecond, 1999 * time.Millisecond},
		{at(300), time.Second, time.Second},
		{at(300), 0, 0},
	}
	for _, c := range cases {
		got := slotted(c.now, c.d)
		if got != c.want {
			t.Errorf("slotted(%s, %v) = %v, want %v", c.now.Format("15:04:05.000"), c.d, got, c.want)
		}
		if end := c.now.Add(got); c.d >= 2*waitSlot && !end.Equal(end.Truncate(time.Second)) {
			t.Errorf("slotted(%s, %v) ends at %s, not on a whole second", c.now.Format("15:04:05.000"), c.d, end.Format("15:04:05.000"))
		}
	}
}
