package spool

import "testing"

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
	group := g.Group(a, reqs)
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
	if group := g.Group(big, reqs); len(group) != 1 || group[0] != big {
		t.Fatalf("group %v: want the big call alone", group)
	}
	if carried, ok := g.Carried(); !ok || carried != small {
		t.Fatal("the call after the big one was not carried")
	}
	if group := g.Group(&req{size: 1, abandoned: true}, reqs); len(group) != 0 {
		t.Fatalf("group %v: want empty when its only call was abandoned", group)
	}
}
