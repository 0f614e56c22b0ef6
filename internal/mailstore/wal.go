package mailstore

import (
	"context"
	"database/sql/driver"
	"fmt"
	"os"
)

// The WAL's bound.
//
// SQLite's automatic checkpoints (PASSIVE, every 1,000 pages) copy the
// WAL's frames into the database but never make the WAL start over while a
// reader still reads from it, and the daemon almost always has one (IMAP
// STATUS and FETCH on the read connections) while the syncer and the
// search indexer keep writing: through a first sync of 500,000 messages
// the WAL grew to 5.8 GB. So after each commit the writer looks at the
// WAL's size (one stat); from three quarters of walLimit on it copies the
// frames beside the writer (below), and above walLimit it runs a TRUNCATE
// checkpoint, which copies what is left, waits up to walWaitMS for the readers that
// still read older frames (a reader that starts once every frame is copied
// reads the database file alone, so it does not hold the checkpoint back),
// and truncates the WAL to zero bytes. It runs on the writer connection
// (synchronous = FULL: the database file is synced before the WAL is cut)
// with the store's write mutex held. docs/MAILSTORE.md, "File and
// durability".

// walLimit is the WAL size, in bytes, above which a commit is followed by
// a TRUNCATE checkpoint (the copy beside the writer starts at three
// quarters of it, copyFrom); it is also the writer's journal_size_limit.
const walLimit = 64 << 20

// walWaitMS is how long that checkpoint waits for readers, in milliseconds:
// writes wait meanwhile, reads do not.
const walWaitMS = 250

// copyFrom is the WAL's size, for a bound of limit, from which a commit
// starts the copy beside the writer (below): three quarters of it. It was
// a half: a first sync of 3,000 messages of 10 KB ends with about 45 MB in
// the WAL, so the copy of its first 32 and then 40 MB ran during the sync,
// on the core the sync's opening of entries needed (0.89x the daemon's CPU
// and 0.92x the sync's time at three quarters, the same at 10,000:
// docs/BENCHMARKS.md, "The copy beside the writer from three quarters").
// The pages are copied all the same, later: by the copy once the search
// index's writes take the WAL there, or after the next small batch
// (below). What is copied, and the WAL's bound, are as before.
func copyFrom(limit int64) int64 { return limit * 3 / 4 }

// The copy beside the writer.
//
// The TRUNCATE checkpoint holds the writer while it copies: in a first
// sync of 10,000 messages of 10 KB (about 15 KB of WAL each) the WAL
// reached its bound twice, and each time the apply's goroutine copied 64
// MiB for 0.27 to 0.35 s while the read ahead of it had ended long before:
// a fifth of the sync's time with one core idle. So from three quarters
// of the bound on (copyFrom), the frames are copied beside the writer: a
// PASSIVE checkpoint on a read connection, which SQLite runs while
// another connection writes and readers read (it takes neither the
// writer's lock nor waits for readers;
// sqlite.org/c3ref/wal_checkpoint_v2.html), and the writer goes on. A
// commit starts one when none runs and the WAL grew by more than an eighth
// of the bound since the last one started; at the bound, the TRUNCATE
// checkpoint waits for one under way and then has only the frames written
// since to copy before it syncs the database file, waits for the readers
// and cuts the WAL. The WAL's bound, and so its index's size, is as before.
// The read connection is closed after each copy, so that its SQLite memory
// is not kept for the next. Every frame is copied once (a page written
// again after its copy, once more), as before.

// passiveCopy is a PASSIVE checkpoint on a read connection.
type passiveCopy struct {
	done chan struct{} // closed when it ended
}

// startPassive starts a PASSIVE checkpoint beside the writer; s.mu is
// held, and no such checkpoint runs. A failure (the database closed, a
// full disk) is the bound's to meet.
func (s *Store) startPassive(size int64) {
	p := &passiveCopy{done: make(chan struct{})}
	s.passive, s.copiedFrom = p, size
	go func() {
		defer close(p.done)
		ctx := context.Background()
		c, err := s.rdb.Conn(ctx)
		if err != nil {
			return
		}
		defer c.Close()
		var busy, logFrames, copied int64
		_ = c.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &copied)
		// Closed, not kept idle: its memory is not the readers'.
		c.Raw(func(any) error { return driver.ErrBadConn })
	}()
}

// waitPassive waits for the checkpoint beside the writer, if one was
// started; s.mu is held.
func (s *Store) waitPassive() {
	if s.passive != nil {
		<-s.passive.done
		s.passive = nil
	}
}

// boundWAL runs after a commit, with s.mu held: from copyFrom(s.walLimit)
// it copies the WAL's frames beside the writer (above); above s.walLimit it
// checkpoints and truncates the WAL. The commit is durable already, so a
// checkpoint that fails (or that readers hold back) is not an error: it is
// tried again once the WAL has grown by a quarter of the limit.
func (s *Store) boundWAL(ctx context.Context) {
	fi, err := os.Stat(s.path + "-wal")
	if err != nil {
		return
	}
	size := fi.Size()
	if p := s.passive; p != nil {
		select {
		case <-p.done:
			s.passive = nil
		default:
		}
	}
	if size <= max(s.walLimit, s.walRetry) {
		if s.passive == nil && size > copyFrom(s.walLimit) && size-s.copiedFrom > s.walLimit/8 {
			s.startPassive(size)
		}
		return
	}
	s.waitPassive()
	if s.checkpointWAL(ctx) {
		s.walRetry, s.copiedFrom = 0, 0
		return
	}
	s.walRetry = size + s.walLimit/4
}

// checkpointWAL runs the TRUNCATE checkpoint with the short busy timeout;
// it reports whether the WAL was truncated.
func (s *Store) checkpointWAL(ctx context.Context) bool {
	c, err := s.wdb.Conn(ctx)
	if err != nil {
		return false
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", walWaitMS)); err != nil {
		return false
	}
	var busy, logFrames, copied int64
	err = c.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &copied)
	if _, rerr := c.ExecContext(context.Background(), fmt.Sprintf("PRAGMA busy_timeout = %d", busyTimeoutMS)); rerr != nil {
		// Not to leave the writer with the short timeout: a new
		// connection takes the data source name's.
		c.Raw(func(any) error { return driver.ErrBadConn })
		return false
	}
	return err == nil && busy == 0
}

// Checkpoints during a catch-up.
//
// SQLite's automatic checkpoint runs inside the commit that leaves 1,000
// pages or more in the WAL, on the writer's goroutine: in a first sync of
// 10 KB messages, every other batch of 200 entries copied the pages the
// batches before it wrote, decrypting them from the WAL and encrypting
// them again into the database (a third of the apply's CPU). A large
// batch (bulkEntries or more: the sync loop reads that many only while it
// is behind the spool's head) commits without it: its pages stay in the
// WAL until the WAL's bound above copies them all at once, or until the
// commit of a small batch, which turns the automatic checkpoint on again
// and so copies them, after the catch-up. Readers read the pages from the
// WAL meanwhile, which SQLite finds through the WAL index, as before a
// checkpoint. What is copied, and when it is durable, is the same: only
// when, and how many pages written twice are copied once.

// bulkEntries is the size of a batch that commits without the automatic
// checkpoint.
const bulkEntries = 64

// After the apply.
//
// A checkpoint an apply leads to, the bound's or the one that follows a
// catch-up (the first small batch after bulk ones: SQLite's automatic
// checkpoint ran inside its commit), copies pages the caller does not
// wait for: the commit is durable without it. It ran on the apply's
// goroutine before Apply returned, so the sync loop told the IMAP server
// of the batch only after it (the last batch of a first sync of 10,000
// messages of 10 KB, or the one at the bound, about 64 MiB of pages: a
// tenth to a quarter of a second), and could not start its next read
// meanwhile. Now Apply returns once the batch has committed and the
// checkpoint runs on a goroutine of its own that holds the store's write
// mutex until it ends: the next write waits for it as it waited before,
// reads do not. The small batch after bulk ones commits with the
// automatic checkpoint still off, and that goroutine turns it on again
// and makes the same PASSIVE checkpoint SQLite would have made in the
// commit, then bounds the WAL. What is copied, and when it is durable, is
// the same; Close waits for the checkpoint (it takes the mutex).

// autoCheckpointPages is SQLite's default automatic checkpoint.
const autoCheckpointPages = 1000

// setAutoCheckpoint turns the automatic checkpoint of the writer off for
// a bulk batch and on again for any other, in the apply's transaction;
// s.noAutoCheckpoint says which the writer has. It is set again at every
// bulk batch (a writer connection closed when idle comes back with the
// default). s.mu is held.
func (a *applier) setAutoCheckpoint(bulk bool) error {
	s := a.writer
	if s == nil || (!bulk && !s.noAutoCheckpoint) {
		return nil
	}
	if !bulk {
		// Turned on again after the commit, by the checkpoint that
		// follows it ("After the apply").
		s.checkpointPending = true
		return nil
	}
	if _, err := a.ExecContext(a.ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
		return fmt.Errorf("setting the automatic checkpoint: %w", err)
	}
	s.noAutoCheckpoint = true
	return nil
}

// checkpointDue reports whether a commit just made leaves a checkpoint
// to make: the automatic one turned on again after a catch-up, or the
// WAL's bound. Below the bound it starts the copy beside the writer when
// one is due, at once. s.mu is held.
func (s *Store) checkpointDue(ctx context.Context) bool {
	if s.checkpointPending {
		return true
	}
	fi, err := os.Stat(s.path + "-wal")
	if err != nil {
		return false
	}
	if fi.Size() > max(s.walLimit, s.walRetry) {
		return true
	}
	s.boundWAL(ctx)
	return false
}

// settleAfter makes the checkpoint checkpointDue found on a goroutine of
// its own, which holds s.mu (held by the caller) until it ends and then
// unlocks it. It is not the caller's to cancel: the commit is made.
func (s *Store) settleAfter(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer s.mu.Unlock()
		if s.settleHook != nil {
			s.settleHook()
		}
		s.settle(ctx)
	}()
}

// settle turns the writer's automatic checkpoint on again after a
// catch-up, with the PASSIVE checkpoint its commit would have made, and
// bounds the WAL. s.mu is held. A checkpoint that fails is no error (the
// commits are durable): one not turned on is tried again after the next
// apply.
func (s *Store) settle(ctx context.Context) {
	if s.checkpointPending {
		s.checkpointPending = false
		if c, err := s.wdb.Conn(ctx); err == nil {
			_, err = c.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", autoCheckpointPages))
			if err == nil {
				s.noAutoCheckpoint = false
				_, _ = c.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
			} else {
				s.checkpointPending = true
			}
			c.Close()
		} else {
			s.checkpointPending = true
		}
	}
	s.boundWAL(ctx)
}

// committed counts a commit (Commits) and bounds the WAL; s.mu is held.
func (s *Store) committed(ctx context.Context) {
	s.commits.Add(1)
	s.boundWAL(ctx)
}
