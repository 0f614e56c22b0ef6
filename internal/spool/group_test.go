package spool

import (
	"testing"
	"time"
)

type req struct {
	size      int64
	abandoned bool
	answered  bool
}

func (r *req) Size() int64 { return r.size }
func (r *req) Abandoned() bool {
	if r.abandoned {
		r.answered = true
	}
	return r.abandoned
}

func TestGrouper(t *testing.T) {
	g := &Grouper[*req]{MaxCount: 3, MaxBytes: 100}
	reqs := make(chan *req, 10)
	a, gone, b, c, d := &req{size: 10}, &req{size: 10, abandoned: true}, &req{size: 50}, &req{size: 30}, &req{size: 1}
	for _, r := range []*req{gone, b, c, d} {
		reqs <- r
	}
	// Byte limit: a, b, c fill 90 of 100; d would be the fourth call.
	group := g.Group(a, true, reqs)
	if len(group) != 3 || group[0] != a || group[1] != b || group[2] != c || !gone.answered {
		t.Fatalf("first group %v: want a, b, c, with the abandoned call answered and left out", group)
	}
	carried, ok := g.Carried()
	if !ok || carried != d {
		t.Fatalf("carried %v, %v: want d", carried, ok)
	}
	if _, ok := g.Carried(); ok {
		t.Fatal("a carried call came back twice")
	}
	// A call over the byte limit alone still makes a group of its own.
	big, small := &req{size: 500}, &req{size: 1}
	reqs <- small
	if group := g.Group(big, true, reqs); len(group) != 1 || group[0] != big {
		t.Fatalf("group %v: want the big call alone", group)
	}
	if carried, ok := g.Carried(); !ok || carried != small {
		t.Fatal("the call after the big one was not carried")
	}
	if group := g.Group(&req{size: 1, abandoned: true}, true, reqs); len(group) != 0 {
		t.Fatalf("group %v: want empty when its only call was abandoned", group)
	}
}

// TestGrouperLingers: after a group of 3, a group that starts with 2 calls
// (which queued during the commit) waits for the 3 callers of the last
// group to come back, and takes them all.
func TestGrouperLingers(t *testing.T) {
	g := &Grouper[*req]{MaxCount: 64, MaxBytes: 1 << 20, MaxLinger: time.Minute}
	reqs := make(chan *req, 10)
	// Nothing known yet: a first group does not wait.
	reqs <- &req{size: 1}
	reqs <- &req{size: 1}
	if group := g.Group(&req{size: 1}, true, reqs); len(group) != 3 {
		t.Fatalf("first group of %d calls, want the 3 waiting", len(group))
	}
	g.Committed(time.Hour) // the linger is bounded by MaxLinger here
	// 2 calls queued during the commit; the 3 answered come back later.
	reqs <- &req{size: 1}
	back := make(chan struct{})
	go func() {
		defer close(back)
		for i := 0; i < 3; i++ {
			time.Sleep(20 * time.Millisecond)
			reqs <- &req{size: 1}
		}
	}()
	if group := g.Group(&req{size: 1}, true, reqs); len(group) != 5 {
		t.Fatalf("second group of %d calls, want 5: the 2 queued and the 3 that came back", len(group))
	}
	<-back
}
