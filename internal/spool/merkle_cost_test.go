package spool

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// The log is tamper-evident through a hash chain (ChainNext). These
// benchmarks measure what a Merkle tree in the manner of Go's checksum
// database (golang.org/x/mod/sumdb/tlog) would cost instead, for the
// decision written in docs/SECURITY.md §6: storage per entry on the
// server, CPU per appended or verified entry, and the bytes of a
// consistency proof on the wire.

// memHashes is tlog's storage reached through its one-method interface.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

// costEntry is a 2.3 KB entry, the size BenchmarkChainPerEntry uses.
var costEntry = bytes.Repeat([]byte{'x'}, 2<<10+300)

// BenchmarkLogAppend is the CPU one appended entry costs the store (and a
// device that recomputes it over every entry it applies): the chain's one
// ChainNext against tlog's record hash plus the interior hashes it stores.
// stored-B/entry is the hash bytes kept per entry, before any database
// overhead.
func BenchmarkLogAppend(b *testing.B) {
	b.Run("chain", func(b *testing.B) {
		var h Hash
		b.SetBytes(int64(len(costEntry)))
		for i := 0; i < b.N; i++ {
			h = ChainNext(h, costEntry)
		}
		b.ReportMetric(float64(len(h)), "stored-B/entry")
	})
	b.Run("tlog", func(b *testing.B) {
		var stored memHashes
		b.SetBytes(int64(len(costEntry)))
		for i := 0; i < b.N; i++ {
			hs, err := tlog.StoredHashes(int64(i), costEntry, stored)
			if err != nil {
				b.Fatal(err)
			}
			stored = append(stored, hs...)
		}
		b.ReportMetric(float64(len(stored)*tlog.HashSize)/float64(b.N), "stored-B/entry")
	})
}

// BenchmarkLogConsistency is what proving that a newer head extends an
// older one costs. The chain has no proof: a reader re-hashes every entry
// between the two (here 1,000 entries), which it must download and open
// anyway to apply them. tlog proves it in O(log n) hashes, without the
// entries; proof-B is the proof's size on the wire.
func BenchmarkLogConsistency(b *testing.B) {
	for _, n := range []int64{5000, 100000, 1000000} {
		stored := make(memHashes, 0, 2*n)
		for i := int64(0); i < n; i++ {
			hs, err := tlog.StoredHashes(i, costEntry[:64], stored)
			if err != nil {
				b.Fatal(err)
			}
			stored = append(stored, hs...)
		}
		old, cur := n-1000, n
		b.Run(fmt.Sprintf("chain-rehash-1000/n=%d", n), func(b *testing.B) {
			var h Hash
			for i := 0; i < b.N; i++ {
				for j := old; j < cur; j++ {
					h = ChainNext(h, costEntry)
				}
			}
			b.ReportMetric(0, "proof-B")
		})
		b.Run(fmt.Sprintf("tlog-prove-check/n=%d", n), func(b *testing.B) {
			th, err := tlog.TreeHash(old, stored)
			if err != nil {
				b.Fatal(err)
			}
			tn, err := tlog.TreeHash(cur, stored)
			if err != nil {
				b.Fatal(err)
			}
			var size int
			for i := 0; i < b.N; i++ {
				p, err := tlog.ProveTree(cur, old, stored)
				if err != nil {
					b.Fatal(err)
				}
				if err := tlog.CheckTree(p, cur, tn, old, th); err != nil {
					b.Fatal(err)
				}
				size = len(p) * tlog.HashSize
			}
			b.ReportMetric(float64(size), "proof-B")
		})
	}
}
