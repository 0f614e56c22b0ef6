package syncer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"cspool/internal/chain"
	"cspool/internal/spool"
)

// StoreSource reads and appends a user's log straight from a spool.Store in
// the same process: for tests, and for tools that run beside the store. It
// is a Checkpointer when the store is a spool.Compactor.
type StoreSource struct {
	Store spool.Store
	User  string
}

var (
	_ Source       = StoreSource{}
	_ Checkpointer = StoreSource{}
)

// ErrNoCheckpoints: the source cannot store checkpoints.
var ErrNoCheckpoints = errors.New("the spool does not support checkpoints")

// ReadLog implements Source, waiting (spool.WaitFor) when nothing is new.
func (s StoreSource) ReadLog(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration) (spool.LogRead, error) {
	entries, err := s.Store.Read(ctx, s.User, after, maxCount, maxBytes)
	if err == nil && len(entries) == 0 && wait > 0 {
		var moved bool
		if moved, err = spool.WaitFor(ctx, s.Store, s.User, after, wait, nil); err == nil && moved {
			entries, err = s.Store.Read(ctx, s.User, after, maxCount, maxBytes)
		}
	}
	if err != nil {
		return spool.LogRead{}, err
	}
	head, err := s.Store.Head(ctx, s.User)
	if err != nil {
		return spool.LogRead{}, err
	}
	c, err := chain.Vouch(after, head, func(pos uint64) (spool.Hash, error) {
		return s.Store.ChainHash(ctx, s.User, pos)
	})
	if err != nil {
		return spool.LogRead{}, err
	}
	lr := spool.LogRead{Entries: entries, Head: head, Chained: c.Chained, StartHash: c.StartHash, HeadHash: c.HeadHash}
	if lr.Checkpoint, err = spool.CheckpointPos(ctx, s.Store, s.User); err != nil {
		return spool.LogRead{}, err
	}
	return lr, nil
}

// Append implements Source.
func (s StoreSource) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	return s.Store.Append(ctx, user, batch)
}

// AppendAt implements HeadSource when the store is a spool.HeadAppender.
func (s StoreSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	ha, ok := s.Store.(spool.HeadAppender)
	if !ok {
		return 0, fmt.Errorf("appending on a condition: %T cannot", s.Store)
	}
	return ha.AppendAt(ctx, user, head, batch)
}

// Checkpoint implements Checkpointer.
func (s StoreSource) Checkpoint(ctx context.Context) (spool.Checkpoint, error) {
	c, ok := s.Store.(spool.Compactor)
	if !ok {
		return spool.Checkpoint{}, ErrNoCheckpoints
	}
	return c.LatestCheckpoint(ctx, s.User)
}

// PutCheckpoint implements Checkpointer.
func (s StoreSource) PutCheckpoint(ctx context.Context, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	c, ok := s.Store.(spool.Compactor)
	if !ok {
		return spool.CompactStats{}, fmt.Errorf("storing checkpoint: %w", ErrNoCheckpoints)
	}
	return c.Compact(ctx, s.User, cp, keep)
}

// PutCheckpointFrom implements Checkpointer: a store in this process takes
// the checkpoint's bytes in memory.
func (s StoreSource) PutCheckpointFrom(ctx context.Context, pos uint64, data *io.SectionReader, keep []uint64) (spool.CompactStats, error) {
	b := make([]byte, data.Size())
	if _, err := data.ReadAt(b, 0); err != nil {
		return spool.CompactStats{}, fmt.Errorf("storing checkpoint: reading it: %w", err)
	}
	return s.PutCheckpoint(ctx, spool.Checkpoint{Pos: pos, Data: b}, keep)
}
