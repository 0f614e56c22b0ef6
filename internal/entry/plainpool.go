package entry

import (
	"math/bits"
	"sync"
)

// Plaintext buffers given back.
//
// Opening an entry allocates its inner plaintext, which the command's
// body is a part of: 10.5 KB for a delivery of 10 KB, half of what a
// device's first sync allocates once the key schedule allocates nothing
// (hpkeopen.go), all of it garbage as soon as its batch is applied. A
// caller that is done with an opened entry and with every byte of its
// command (the syncer, once the batch is applied and committed) gives it
// back with Release, and a later Open takes its buffer again. The buffers
// are pooled by size class, eighths of each power of two (a buffer at
// most an eighth larger than asked for, as Go's own size classes), from
// MinPadded to maxPooledPlain; larger plaintexts are allocated as before.

// maxPooledPlain is the largest inner plaintext whose buffer is pooled.
const maxPooledPlain = 256 << 10

// minPlainShift is the power of two below the smallest class.
const minPlainShift = 9

var plainPools [(bits.UintSize - minPlainShift) * 8]sync.Pool

// plainClass returns the index and the size of the class of buffers that
// hold n bytes; ok is false for n beyond the pooled sizes.
func plainClass(n int) (idx, size int, ok bool) {
	if n > maxPooledPlain {
		return 0, 0, false
	}
	n = max(n, MinPadded)
	k := bits.Len(uint(n-1)) - 1 // 2^k < n <= 2^(k+1)
	step := 1 << (k - 3)
	j := (n - 1<<k + step - 1) / step // 1 to 8
	return (k-minPlainShift)*8 + j - 1, 1<<k + j*step, true
}

// plainBuffer returns a buffer of n bytes, from the pool when its class
// has one; pooled is whether it may go back (Release).
func plainBuffer(n int) (b []byte, pooled bool) {
	idx, size, ok := plainClass(n)
	if !ok {
		return make([]byte, n), false
	}
	if p, _ := plainPools[idx].Get().(*[]byte); p != nil {
		return (*p)[:n], true
	}
	return make([]byte, n, size), true
}

// Release gives the entry's plaintext back for a later Open: o, its
// command and every byte slice the command holds (its body) must not be
// used after it. The command's body is set to nil, so that a use after
// Release finds no body rather than another entry's bytes. Releasing an
// entry twice, or one that OpenFrom streamed, does nothing.
func (o *Opened) Release() {
	if o == nil || o.plain == nil {
		return
	}
	b := o.plain[:cap(o.plain)]
	o.plain = nil
	if o.Cmd != nil {
		o.Cmd.Body = nil
	}
	if idx, size, ok := plainClass(len(b)); ok && size == len(b) {
		plainPools[idx].Put(&b)
	}
}
