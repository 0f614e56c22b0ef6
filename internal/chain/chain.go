// Package chain is the integrity vocabulary of the log: the chain hash
// over a user's entries, and the checks a device makes with it on what a
// spool tells it (docs/SECURITY.md §3). It is pure, in the manner of
// golang.org/x/mod/sumdb/tlog: functions of their arguments, no I/O, no
// clock, no state. Whoever holds the hashes (the spool's stores, the
// device's mail store) reads and writes them; this package only says
// what they must be and whether a claim agrees with them.
//
// Invariants:
//
//   - h(0) is 32 zero bytes and h(n) = Next(h(n-1), data of entry n):
//     two logs with equal hashes at a position hold the same entries, in
//     the same order, up to it.
//   - Every check returns nil or a *Failure naming what was violated
//     (its Kind) and saying it in words a person can act on (its Detail);
//     the words are the integrity alarm's, so they do not change without
//     docs/SECURITY.md.
package chain

import (
	"crypto/sha256"
)

// Hash is a chain hash: the tamper-evident summary of a log's history up
// to a position.
type Hash [sha256.Size]byte

// Next returns the chain hash after appending an entry with data to a log
// whose chain hash was prev:
//
//	h(0) = 32 zero bytes
//	h(n) = SHA-256("cspool/v1 chain" || h(n-1) || SHA-256(data(n)))
func Next(prev Hash, data []byte) Hash {
	return NextLeaf(prev, Leaf(data))
}

// Leaf returns SHA-256(data), the part of Next that depends on the entry
// alone: it can be computed for many entries at once, in any order, and
// the entry's bytes let go before the chain reaches it.
func Leaf(data []byte) [sha256.Size]byte {
	return sha256.Sum256(data)
}

// NextLeaf is Next for an entry whose Leaf is leaf.
func NextLeaf(prev Hash, leaf [sha256.Size]byte) Hash {
	h := sha256.New()
	h.Write([]byte("cspool/v1 chain"))
	h.Write(prev[:])
	h.Write(leaf[:])
	var out Hash
	copy(out[:], h.Sum(nil))
	return out
}

// Over returns the chain hashes after each of data, starting from prev:
// out[i] is the hash after data[i].
func Over(prev Hash, data ...[]byte) []Hash {
	out := make([]Hash, len(data))
	for i, d := range data {
		prev = Next(prev, d)
		out[i] = prev
	}
	return out
}
