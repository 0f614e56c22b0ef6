package mailstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/ncruces/go-sqlite3"
)

// The writer's memory after a long sync.
//
// Each connection's SQLite runs in a Wasm memory of its own that grows
// and never shrinks while the connection is open (docs/MAILSTORE.md). A
// sync fills the writer's page cache of writeCacheKiB, which the apply
// needs: the indexes with random keys (messages.id, entries.id,
// bodies.digest) of a large store are read again, and decrypted, at every
// batch when it is smaller. Then the search indexer takes the writer for
// the bodies the sync stored, and FTS5's buffers grow its memory again
// beyond the cache: 12.5 to 13.2 MB after a first sync of 100,000
// messages, while IMAP clients read the store. The index's transactions
// read the bodies once, in order, and write new segments, and need no
// such cache.
//
// So the index's transactions hold the writer's cache to indexCacheKiB,
// and the first of them after applies that filled it beyond
// releaseAboveKiB gives the writer's connection back first (its SQLite
// memory is unmapped when it closes) and takes a new one; the next apply
// gives the cache writeCacheKiB again. What decides is the cache, not the
// messages applied: a few batches of small messages read back the index
// pages of a large store, and fill it as much as a sync. A store opened
// with its own writer's cache (Options.WriteCacheKiB, bulk builds) keeps
// it throughout.

// indexCacheKiB bounds the writer's page cache in the search index's
// transactions.
const indexCacheKiB = 2048

// releaseAboveKiB is how much the writer's cache may hold (its pages and
// their headers) when an index transaction begins without its connection
// being given back.
const releaseAboveKiB = indexCacheKiB * 5 / 4

// writerForApply gives the writer's cache its size for an apply back if
// the index's transactions held it small; tx is the apply's, s.mu is
// held.
func (s *Store) writerForApply(ctx context.Context, tx *sql.Tx) error {
	if !s.indexCache {
		return nil
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", s.writeCache)); err != nil {
		return fmt.Errorf("setting the writer's cache: %w", err)
	}
	s.indexCache = false
	return nil
}

// releaseWriter closes the writer's connection before an index
// transaction if its cache holds more than releaseAboveKiB; s.mu is held,
// so no transaction of the writer is open. Should it fail, the index runs
// on the connection as it is, its cache made small.
func (s *Store) releaseWriter(ctx context.Context) {
	if s.fixedCache {
		return
	}
	s.indexCache = true
	c, err := s.wdb.Conn(ctx)
	if err != nil {
		return
	}
	defer c.Close()
	// A connection that reports itself bad is closed, not kept idle
	// (database/sql), and the next statement opens a new one with the
	// data source name's settings.
	_ = c.Raw(func(dc any) error {
		rc, ok := dc.(interface{ Raw() *sqlite3.Conn })
		if !ok {
			return nil
		}
		if cached, _, err := rc.Raw().Status(sqlite3.DBSTATUS_CACHE_USED, false); err == nil && cached <= releaseAboveKiB<<10 {
			return nil
		}
		return driver.ErrBadConn
	})
}

// writerForIndex holds the writer's cache to indexCacheKiB in an index
// transaction tx, with the automatic checkpoint as the applies left it
// (wal.go: a new connection has SQLite's); s.mu is held.
func (s *Store) writerForIndex(ctx context.Context, tx *sql.Tx) error {
	if !s.indexCache {
		return nil
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", indexCacheKiB)); err != nil {
		return fmt.Errorf("setting the writer's cache: %w", err)
	}
	if s.noAutoCheckpoint {
		if _, err := tx.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
			return fmt.Errorf("setting the automatic checkpoint: %w", err)
		}
	}
	return nil
}
