package main

import (
	"testing"
	"time"

	"cspool/internal/syncer"
)

// statingSource is a spool client that states a budget and a quota.
type statingSource struct{ syncer.Source }

func (statingSource) Budget() (int, time.Duration, int, bool) { return 500, time.Minute, 7, true }
func (statingSource) Quota() (int64, int64, bool)             { return 95, 100, true }

// TestCountingSourcePassesStatements: cspool sync wraps its spool client
// to count what it reads; the spool's budget and its statement of the
// user's quota stay visible through the wrapper, so that the loop paces
// itself by the one and writes a checkpoint near the other.
func TestCountingSourcePassesStatements(t *testing.T) {
	var src syncer.Source = &countingSource{Source: statingSource{}}
	b, ok := src.(syncer.Budgeted)
	if !ok {
		t.Fatal("the budget is not visible through countingSource")
	}
	if n, w, held, ok := b.Budget(); !ok || n != 500 || w != time.Minute || held != 7 {
		t.Errorf("budget through countingSource: %d, %v, %d, %v", n, w, held, ok)
	}
	q, ok := src.(syncer.QuotaStated)
	if !ok {
		t.Fatal("the quota is not visible through countingSource")
	}
	if u, l, ok := q.Quota(); !ok || u != 95 || l != 100 {
		t.Errorf("quota through countingSource: %d/%d, %v", u, l, ok)
	}
}
