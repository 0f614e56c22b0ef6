package spool

import (
	"context"

	"cspool/internal/chain"
)

// Hash is a chain hash (package chain, which defines it and the checks
// made with it).
type Hash = chain.Hash

// ChainNext returns the chain hash after appending an entry with data to a
// log whose chain hash was prev (chain.Next):
//
//	h(0) = 32 zero bytes
//	h(n) = SHA-256("cspool/v1 chain" || h(n-1) || SHA-256(data(n)))
//
// Two logs with equal chain hashes at a position hold the same entries, in
// the same order, up to it. The store computes it at append time and keeps
// it for every position forever (compaction deletes entries, not their
// hashes); devices recompute it from what they are given and compare.
func ChainNext(prev Hash, data []byte) Hash { return chain.Next(prev, data) }

// Chainer is the tamper-evidence part of a Store. It is not optional: API
// v1 sends the chain hashes with every read, and a device treats a read
// without them as an attack on its checks (docs/SECURITY.md §3).
//
// Invariants: ChainHash(user, n) = ChainNext(ChainHash(user, n-1), data of
// entry n) for every n from 1 to the head, computed in the same transaction
// that appends entry n; it is never changed afterwards and survives
// compaction.
type Chainer interface {
	// ChainHash returns the chain hash at pos (the zero Hash for pos 0).
	// It fails with ErrInvalidArgument when pos is beyond the head.
	ChainHash(ctx context.Context, user string, pos uint64) (Hash, error)
}

// Tip is what a reader of a log needs besides its entries: the head, the
// chain hash at the head and the position of the newest checkpoint (0 if
// none), as they were at one instant.
type Tip struct {
	Head       uint64
	HeadHash   Hash
	Checkpoint uint64
}

// TipReader is the optional capability of a Store to read a log's Tip in
// one consistent read, where Head, ChainHash(Head) and CheckpointPos would
// take three. The HTTP API answers every read with the three, and a device
// that is up to date renews its long-poll every 30 s with a read that has
// nothing else to answer: with many devices these reads are most of an
// idle server's work.
//
// Invariant: Tip(user) equals Head(user), ChainHash(user, Head(user)) and
// the checkpoint position (spool.CheckpointPositioner, 0 for a store that
// does not compact) read at one instant; the zero Tip for an unknown user.
type TipReader interface {
	Tip(ctx context.Context, user string) (Tip, error)
}

// TipWaiter is the optional capability of a Store to wait as Wait does
// while reading the Tip where Wait reads the head, and to give the Tip it
// read last when the wait ends with nothing new. A long-poll that ends so
// (most of them: a device at the head renews its long-poll every few
// minutes) is then answered with that Tip instead of reading it again.
//
// WaitTip returns what Wait returns. When ctx ends it also returns the
// Tip it read after the last wake-up that reached it, whose Head is not
// beyond after; ok is false when it read none. An append that commits
// after that read wakes the wait, so the Tip is at most as old as the
// notices the store already relies on to wake waits (a checkpoint stored
// meanwhile may be missing from it: a device at the head needs none, and
// its next read gives it).
type TipWaiter interface {
	WaitTip(ctx context.Context, user string, after uint64) (tip Tip, ok bool, err error)
}
