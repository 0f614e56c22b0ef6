package main

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// sink keeps the test's buffer from being optimised away.
var sink []byte

// fillSink makes sink a buffer of 32 MiB, every page of it written.
func fillSink() {
	sink = make([]byte, 32<<20)
	for i := range sink {
		sink[i] = byte(i)
	}
}

// TestGiveBackLargeGarbage: a buffer of 32 MiB, live through a
// collection (as a message's buffers are through those their delivery
// or sync makes) and then dropped, is given back to the system at the
// first look after the collector has gone quiet: the heap's free pages
// kept are then under 8 MiB, and its objects are back within 4 MiB of
// what they were before. The look while the collector was running gives
// nothing back, nor does a look after the one that did.
func TestGiveBackLargeGarbage(t *testing.T) {
	runtime.GC()
	h := newHeapWatch()
	before := h.value(1)
	fillSink()
	runtime.GC() // the buffer is live through it
	sink = nil
	if h.look() {
		t.Fatal("the look just after a collection gave memory back; want it to wait until the collector is quiet")
	}
	if !h.look() {
		t.Fatalf("the look once the collector was quiet gave nothing back (heap %d bytes)", h.heap())
	}
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	if objects, free := s[0].Value.Uint64(), s[1].Value.Uint64(); free > 8<<20 || objects > before+4<<20 {
		t.Errorf("after giving back: objects %d bytes (%d before the buffer), free pages kept %d; want objects within 4 MiB of before, at most 8 MiB free",
			objects, before, free)
	}
	if h.look() {
		t.Error("a second look gave memory back again")
	}
}

// TestGiveBackNotWhatIsKept: a collection that finds live what the
// process kept when it was last quiet (a spool server's parked
// long-polls, 32 MiB here) is followed by no collection of the look's
// own, however much heap the process holds: there is nothing to give
// back that the runtime's own scavenging would not, and the collection
// would mark it all again.
func TestGiveBackNotWhatIsKept(t *testing.T) {
	fillSink()
	runtime.GC()
	h := newHeapWatch()
	runtime.GC() // a collection of the quiet process, the buffer still live
	if h.look() {
		t.Fatal("the look just after a collection gave memory back")
	}
	before := h.cycles
	if h.look() {
		t.Fatal("the look after a collection that found only what was kept live gave memory back; want no collection of its own")
	}
	if h.cycles != before {
		t.Errorf("collections %d after the look, %d before; want none made by it", h.cycles, before)
	}
	runtime.KeepAlive(sink)
	sink = nil
}

// TestGiveBackAfterLiveDrops: a collection that found 32 MiB less live
// than the process kept when last quiet (a busy spell's buffers, now
// garbage, their pages still in the heap) is followed by the give-back.
func TestGiveBackAfterLiveDrops(t *testing.T) {
	fillSink()
	runtime.GC()
	h := newHeapWatch()
	sink = nil
	runtime.GC()
	if h.look() {
		t.Fatal("the look just after a collection gave memory back")
	}
	if !h.look() {
		t.Fatalf("the look after a collection that freed 32 MiB gave nothing back (heap %d bytes)", h.heap())
	}
}
