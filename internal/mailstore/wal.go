package mailstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/ncruces/go-sqlite3"
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

// The checkpoints beside the writer.
//
// SQLite checkpoints a WAL on the connection that commits, inside the
// commit, once the WAL holds 1,000 pages (wal_autocheckpoint): a first
// sync's apply copied its pages into the database file (through the
// encrypting VFS, with the file's fsync) on the writer's goroutine, 14% of
// the daemon's CPU there and a quarter of the apply's. Instead, the
// writer's WAL hook (its connections have no automatic checkpoint) wakes
// the store's checkpointer when a commit leaves checkpointPages frames or
// more in the WAL, and the checkpointer runs the same PASSIVE checkpoint
// on a read connection while the writer goes on: SQLite lets one
// connection checkpoint while another writes, and a PASSIVE checkpoint
// neither waits for nor stops readers or the writer
// (sqlite.org/c3ref/wal_checkpoint_v2.html). A wake-up while a checkpoint
// runs is kept (one), so frames committed meanwhile are copied by the next.
// Every frame is copied once, as before. The WAL starts over less often:
// SQLite starts it over when a write transaction begins after a checkpoint
// that copied every frame, and while a sync applies batch after batch the
// writer's next transaction has mostly begun before the checkpoint beside
// it ends; so through a first sync the WAL grows to the bound below, where
// the writer's TRUNCATE checkpoint copies the little left (the frames of
// the commits since the last checkpoint) and cuts it, as it did before
// when readers held the WAL.

// checkpointPages is the number of WAL frames from which a commit wakes
// the checkpointer: SQLite's wal_autocheckpoint default.
const checkpointPages = 1000

// checkpointer runs PASSIVE checkpoints when the writer asks.
type checkpointer struct {
	wake chan struct{} // a commit left checkpointPages frames or more
	quit chan struct{} // closed by stop
	done chan struct{} // closed when run returns
	// hold, if set, is received from before each checkpoint (tests).
	hold <-chan struct{}
	// ran counts the checkpoints run (tests).
	ran atomic.Int64
}

func newCheckpointer(hold <-chan struct{}) *checkpointer {
	return &checkpointer{wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), hold: hold}
}

// hook is the writer's connection hook: it replaces SQLite's automatic
// checkpoint with a WAL hook that wakes the checkpointer.
func (c *checkpointer) hook(conn *sqlite3.Conn) error {
	conn.WALHook(func(_ *sqlite3.Conn, _ string, frames int) error {
		if frames >= checkpointPages {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		return nil
	})
	return nil
}

// run checkpoints on db's connections each time it is woken, until stop.
func (c *checkpointer) run(db *sql.DB) {
	defer close(c.done)
	for {
		select {
		case <-c.quit:
			return
		case <-c.wake:
		}
		if c.hold != nil {
			select {
			case <-c.quit:
				return
			case <-c.hold:
			}
		}
		var busy, frames, copied int64
		// A failure (the database closed under it, a full disk) is
		// the next checkpoint's to retry, or the bound's.
		_ = db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
		c.ran.Add(1)
	}
}

// stop ends run and waits for a checkpoint under way.
func (c *checkpointer) stop() {
	close(c.quit)
	<-c.done
}

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

// committed counts a commit (Commits) and bounds the WAL; s.mu is held.
func (s *Store) committed(ctx context.Context) {
	s.commits.Add(1)
	s.boundWAL(ctx)
}
