package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Giving a large message's memory back.
//
// A message of 16 MB (50 MB may be mailed) passes through the spool
// server and the device daemon as a few buffers of its size: the DATA
// read and the sealed entry on the server, the entry read, opened and
// applied on the device, the body indexed and fetched. Once they are
// dropped they are garbage, but a process that then goes quiet allocates
// next to nothing, so the collector does not run again until its forced
// collection two minutes later, and its pages are given back to the
// system only after that: the server kept 85 MB more than it had before
// the message, the daemon 16 to 35 MB. The collection that ran while the
// buffers were in use counted them live, so what the runtime reports of
// the last collection cannot tell this garbage from live memory.
//
// So each role looks at its heap every giveBackInterval (runtime/metrics:
// microseconds, no allocation). When the collector has run since the look
// before (the process was busy enough to fill its heap) and has not since
// the one before that (it has gone quiet), the heap holds more than
// giveBackAbove in objects and free pages, and the last collection found
// live what the process kept when it was last quiet give or take more
// than giveBackAbove and a quarter (more: buffers that were in use then;
// less: what it had just freed, a busy spell's garbage, still in the
// heap's pages), it collects once and gives the free pages back
// (debug.FreeOSMemory). At most one such collection follows each busy
// spell, however long the process then stays quiet; a process that keeps
// busy is left to its own collections.
//
// A collection that found what the process keeps anyway is no such spell:
// a spool server holding 10,000 devices' long-polls collects every two
// minutes or so with about the same 40 MB live (their connections), and a
// collection after each, with its mark of every parked goroutine's stack
// and the pages given back only to be faulted in again, doubled the
// collector's share of its idle CPU.

// giveBackInterval is how often the heap is looked at.
const giveBackInterval = 2 * time.Second

// giveBackAbove is the heap, in bytes of objects and free pages kept,
// below which nothing is given back.
const giveBackAbove = 8 << 20

// heapWatch is what the looks at the heap remember.
type heapWatch struct {
	samples []metrics.Sample
	cycles  uint64 // collections counted at the last look
	busy    bool   // the collector ran between the two last looks
	kept    uint64 // the live heap of the last collection, at the last quiet look
}

func newHeapWatch() *heapWatch {
	h := &heapWatch{samples: []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}}
	h.read()
	h.cycles, h.kept = h.value(0), h.value(4)
	return h
}

func (h *heapWatch) read() { metrics.Read(h.samples) }

func (h *heapWatch) value(i int) uint64 {
	if h.samples[i].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return h.samples[i].Value.Uint64()
}

// heap is the heap's objects (live or garbage) and free pages kept, as
// last read.
func (h *heapWatch) heap() uint64 { return h.value(1) + h.value(2) + h.value(3) }

// look is one look at the heap; it says whether it gave memory back.
func (h *heapWatch) look() bool {
	h.read()
	cycles := h.value(0)
	if cycles != h.cycles {
		h.cycles, h.busy = cycles, true
		return false
	}
	live := h.value(4)
	if !h.busy {
		h.kept = live
		return false
	}
	h.busy = false
	if h.heap() <= giveBackAbove || !moved(h.kept, live) {
		h.kept = live
		return false
	}
	debug.FreeOSMemory()
	h.read()
	h.cycles, h.kept = h.value(0), h.value(4)
	return true
}

// moved reports whether the live heap went from kept to live by more than
// giveBackAbove and a quarter of kept, either way.
func moved(kept, live uint64) bool {
	d := max(kept, live) - min(kept, live)
	return d > giveBackAbove+kept/4
}

// startGiveBack looks at the heap every giveBackInterval until the
// function it returns is called.
func startGiveBack() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		h := newHeapWatch()
		t := time.NewTicker(giveBackInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				h.look()
			}
		}
	}()
	return cancel
}
