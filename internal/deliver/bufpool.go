package deliver

import (
	"math/bits"
	"sync"
)

// bufPool keeps the buffers of delivered messages for the next ones: the
// buffer a message is read into after DATA and those its entries are
// sealed into. Without it every message allocated both afresh (two
// thirds of the LMTP listener's allocations at 10 KB a message), and the
// garbage collector ran as often as that garbage filled its heap.
//
// Buffers come in classes of a power of two from bufMin to bufMax bytes
// of capacity; a larger buffer is allocated and dropped as before. A
// buffer goes back only once nothing uses it any more: the message's
// after its last recipient's delivery has returned, an entry's after an
// append that returned nil (an append that failed, or whose caller gave
// up, may still be written from it). sync.Pool drops what is not taken
// again within two collections, so a quiet listener holds none of them.
type bufPool struct {
	classes [bufClasses]sync.Pool // of *[]byte, class i of bufMin << i bytes
}

const (
	bufMinShift = 14 // 16 KiB, inboxFirstGrowth
	bufMin      = 1 << bufMinShift
	bufClasses  = 7 // up to 1 MiB
	bufMax      = bufMin << (bufClasses - 1)
)

// class is the class of a buffer of at least n bytes, or -1 above bufMax.
func bufClass(n int) int {
	if n > bufMax {
		return -1
	}
	if n <= bufMin {
		return 0
	}
	return bits.Len(uint(n-1)) - bufMinShift
}

// fit is the capacity to ask get for n bytes: n's class's, when that is
// at most limit, or else n.
func (p *bufPool) fit(n, limit int64) int64 {
	if c := bufClass(int(min(n, bufMax+1))); c >= 0 && int64(bufMin)<<c <= limit {
		return int64(bufMin) << c
	}
	return n
}

// get returns an empty buffer with a capacity of n: one of the pool's
// when n is a class's capacity (fit), else a new one.
func (p *bufPool) get(n int) []byte {
	c := bufClass(n)
	if c < 0 || n != bufMin<<c {
		return make([]byte, 0, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, n)
}

// put gives b back for another message; nothing may use it afterwards.
// A buffer whose capacity is not a class's is dropped.
func (p *bufPool) put(b []byte) {
	c := bufClass(cap(b))
	if c < 0 || cap(b) != bufMin<<c {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}
