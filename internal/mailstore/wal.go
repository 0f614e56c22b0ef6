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
// WAL's size (one stat); above walLimit it runs a TRUNCATE checkpoint,
// which copies what is left, waits up to walWaitMS for the readers that
// still read older frames (a reader that starts once every frame is copied
// reads the database file alone, so it does not hold the checkpoint back),
// and truncates the WAL to zero bytes. It runs on the writer connection
// (synchronous = FULL: the database file is synced before the WAL is cut)
// with the store's write mutex held. docs/MAILSTORE.md, "File and
// durability".

// walLimit is the WAL size, in bytes, above which a commit is followed by
// a TRUNCATE checkpoint; it is also the writer's journal_size_limit.
const walLimit = 64 << 20

// walWaitMS is how long that checkpoint waits for readers, in milliseconds:
// writes wait meanwhile, reads do not.
const walWaitMS = 250

// boundWAL runs after a commit, with s.mu held: it checkpoints and
// truncates the WAL when it is larger than s.walLimit. The commit is
// durable already, so a checkpoint that fails (or that readers hold back)
// is not an error: it is tried again once the WAL has grown by a quarter
// of the limit.
func (s *Store) boundWAL(ctx context.Context) {
	fi, err := os.Stat(s.path + "-wal")
	if err != nil || fi.Size() <= max(s.walLimit, s.walRetry) {
		return
	}
	if s.checkpointWAL(ctx) {
		s.walRetry = 0
		return
	}
	s.walRetry = fi.Size() + s.walLimit/4
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
	pages := autoCheckpointPages
	if bulk {
		pages = 0
	}
	if _, err := a.ExecContext(a.ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", pages)); err != nil {
		return fmt.Errorf("setting the automatic checkpoint: %w", err)
	}
	s.noAutoCheckpoint = bulk
	return nil
}

// committed counts a commit (Commits) and bounds the WAL; s.mu is held.
func (s *Store) committed(ctx context.Context) {
	s.commits.Add(1)
	s.boundWAL(ctx)
}
