package mailstore

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"cspool/internal/chain"
)

// ChainAt returns the chain hash this store recorded at pos, and false when
// it has none (a position before a restored checkpoint, or never applied).
func (s *Store) ChainAt(ctx context.Context, pos uint64) (chain.Hash, bool, error) {
	var h chain.Hash
	if err := s.check(); err != nil {
		return h, false, err
	}
	if pos == 0 {
		return h, true, nil
	}
	var b []byte
	err := s.rdb.QueryRowContext(ctx, "SELECT hash FROM chain WHERE pos = ?", int64(pos)).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("reading chain hash at %d: %w", pos, err)
	}
	copy(h[:], b)
	return h, true, nil
}

// Alarm is an integrity alarm: what a check saw, at which log position.
type Alarm struct {
	At     time.Time
	Pos    uint64
	Detail string
}

// RaiseAlarm records an integrity alarm. It stays until ClearAlarms.
func (s *Store) RaiseAlarm(ctx context.Context, pos uint64, detail string) error {
	return s.writeTx(ctx, "recording integrity alarm", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO alarms (at, pos, detail) VALUES (?, ?, ?)", time.Now().UnixMilli(), int64(pos), detail)
		if err != nil {
			return fmt.Errorf("recording integrity alarm: %w", err)
		}
		return nil
	})
}

// Alarms lists the recorded integrity alarms, oldest first.
func (s *Store) Alarms(ctx context.Context) ([]Alarm, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT at, pos, detail FROM alarms ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("reading alarms: %w", err)
	}
	defer rows.Close()
	var out []Alarm
	for rows.Next() {
		var a Alarm
		var at, pos int64
		if err := rows.Scan(&at, &pos, &a.Detail); err != nil {
			return nil, fmt.Errorf("reading alarms: %w", err)
		}
		a.At, a.Pos = time.UnixMilli(at), uint64(pos)
		out = append(out, a)
	}
	return out, rows.Err()
}

// ClearAlarms removes every integrity alarm: a person's decision, after
// looking into what was seen. It also forgets the entries this device
// appended and has not yet seen in the log (RecordAppended): an alarm for a
// dropped append is cleared by accepting that the change is lost, and must
// not come back.
func (s *Store) ClearAlarms(ctx context.Context) error {
	return s.writeTx(ctx, "clearing alarms", func(tx *sql.Tx) error {
		for _, q := range []string{"DELETE FROM alarms", "DELETE FROM appended"} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("clearing alarms: %w", err)
			}
		}
		return nil
	})
}

// EntriesSeen returns, of the given entry ids, those applied or rejected
// before, with their positions, in a few queries: a second entry with the
// same id is a replay. Queued ids are left out. Ids are random, so a
// batch's lookups touch most of the table entries' pages (2.5 MB and more
// at 100,000 entries): they run through readScan, so that they do not fill
// the cache of each reader a sync's batches happen to take. Not on the
// writer, where the search indexer's transactions would hold up the sync
// loop's checks.
func (s *Store) EntriesSeen(ctx context.Context, ids [][16]byte) (map[[16]byte]uint64, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	const chunk = 500
	out := map[[16]byte]uint64{}
	err := s.readScan(ctx, func(c *sql.Conn) error {
		for len(ids) > 0 {
			n := min(chunk, len(ids))
			args := make([]any, n)
			for i := range args {
				args[i] = ids[i][:]
			}
			q := "SELECT id, pos FROM entries WHERE id IN (?" + strings.Repeat(", ?", n-1) + ") AND id NOT IN (SELECT id FROM queue)"
			rows, err := c.QueryContext(ctx, q, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var b []byte
				var pos int64
				if err := rows.Scan(&b, &pos); err != nil {
					rows.Close()
					return err
				}
				var id [16]byte
				copy(id[:], b)
				out[id] = uint64(pos)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			ids = ids[n:]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("looking up entry ids: %w", err)
	}
	return out, nil
}

// scanCacheKiB is the page cache of a read connection while readScan
// runs: the interior pages of a table or index of millions of rows fit.
const scanCacheKiB = 256

// readScan runs f on a read connection whose page cache is held to
// scanCacheKiB meanwhile: for reads that touch most pages of a large table
// or index once (a count, lookups of random keys), which would otherwise
// fill the connection's cache with them, and SQLite's memory grows with
// the cache and never shrinks while the connection is open. The cache is
// given its size back after.
func (s *Store) readScan(ctx context.Context, f func(*sql.Conn) error) error {
	c, err := s.rdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", scanCacheKiB)); err != nil {
		return err
	}
	defer restoreReadCache(c)
	return f(c)
}

// restoreReadCache gives read connection c its page cache of readCacheKiB
// back after a read through the small one.
func restoreReadCache(c *sql.Conn) {
	if _, err := c.ExecContext(context.Background(), fmt.Sprintf("PRAGMA cache_size = -%d", readCacheKiB)); err != nil {
		// Not to leave a reader with the small cache: the pool opens a
		// new one with the data source name's.
		c.Raw(func(any) error { return driver.ErrBadConn })
	}
}

// OtherSpoolKeyError: the database trusts another spool key than the one
// given (TrustSpoolKey), and than the previous one given with it
// (ReplaceSpoolKey).
type OtherSpoolKeyError struct {
	Recorded []byte // the key the database trusts
	// Previous is the previous key given, when one was (ReplaceSpoolKey):
	// neither the key recorded nor the one it replaced.
	Previous []byte
	// Replaced is the key the database trusted before Recorded, when it
	// records one (ReplaceSpoolKey moved it): another than Previous.
	Replaced []byte
}

func (e *OtherSpoolKeyError) Error() string {
	if e.Previous != nil {
		return fmt.Sprintf("mailstore: this database trusts the spool key %x for deliveries, and the previous key given, %x, is not the one it trusted before", e.Recorded, e.Previous)
	}
	return fmt.Sprintf("mailstore: this database trusts the spool key %x for deliveries, not the one given", e.Recorded)
}

// TrustSpoolKey records key (a public key's 64 bytes, keys.PublicKey.Bytes)
// as the spool's key this database trusts for deliveries if it records
// none yet, or another under which it has applied no entry (SpoolKeyUsed),
// and returns an *OtherSpoolKeyError if it records another it has used.
// Every delivery the log holds is signed by one spool key, so a device that
// applied them with one key cannot take another: with the wrong one it
// would reject every delivery that followed. A key not used yet may be
// the wrong one: the syncer stops before deliveries signed by another
// rather than pass them by, so a start with the right key finds them.
func (s *Store) TrustSpoolKey(ctx context.Context, key []byte) error {
	if len(key) != 64 {
		return fmt.Errorf("mailstore: a spool key of %d bytes, want 64", len(key))
	}
	return s.writeTx(ctx, "recording the spool key", func(tx *sql.Tx) error {
		var recorded []byte
		var used bool
		if err := tx.QueryRowContext(ctx, "SELECT spool_key, spool_key_used FROM local").Scan(&recorded, &used); err != nil {
			return fmt.Errorf("reading the spool key: %w", err)
		}
		switch {
		case bytes.Equal(recorded, key):
			return nil
		case recorded == nil, !used:
			if _, err := tx.ExecContext(ctx, "UPDATE local SET spool_key = ?", key); err != nil {
				return fmt.Errorf("recording the spool key: %w", err)
			}
			return nil
		default:
			return &OtherSpoolKeyError{Recorded: recorded}
		}
	})
}

// ReplaceSpoolKey records key as the spool key this database trusts for
// deliveries and previous as the one it replaced, trusted for deliveries
// until the first entry signed by key (the cutover, SpoolKeyCutover). A
// database that records previous moves its record to key, as not used
// yet, and ReplaceSpoolKey reports true: the syncer then stops before
// deliveries signed by neither key rather than pass them by, as with a
// key given at a first sync. One that records key already, or none, or
// another key not used, takes them as TrustSpoolKey does (nothing moved).
// One that records another key it has used, or key with another previous
// key than the one given, returns an *OtherSpoolKeyError naming previous:
// the key replaced is not the one given. key and previous must differ.
func (s *Store) ReplaceSpoolKey(ctx context.Context, key, previous []byte) (moved bool, err error) {
	if len(key) != 64 || len(previous) != 64 {
		return false, fmt.Errorf("mailstore: spool keys of %d and %d bytes, want 64", len(key), len(previous))
	}
	if bytes.Equal(key, previous) {
		return false, errors.New("mailstore: the previous spool key is the spool key")
	}
	err = s.writeTx(ctx, "recording the spool key", func(tx *sql.Tx) error {
		var recorded, replaced []byte
		var used bool
		if err := tx.QueryRowContext(ctx, "SELECT spool_key, spool_key_used, previous_spool_key FROM local").Scan(&recorded, &used, &replaced); err != nil {
			return fmt.Errorf("reading the spool key: %w", err)
		}
		switch {
		case bytes.Equal(recorded, previous):
			moved = true
			if _, err := tx.ExecContext(ctx, "UPDATE local SET spool_key = ?, previous_spool_key = ?, spool_key_used = 0, spool_key_cutover = 0", key, previous); err != nil {
				return fmt.Errorf("replacing the spool key: %w", err)
			}
			// The keys before the one moved from are not the new key's.
			if _, err := tx.ExecContext(ctx, "DELETE FROM earlier_spool_keys"); err != nil {
				return fmt.Errorf("replacing the spool key: %w", err)
			}
			return nil
		case bytes.Equal(recorded, key) && replaced != nil && !bytes.Equal(replaced, previous):
			return &OtherSpoolKeyError{Recorded: recorded, Previous: previous, Replaced: replaced}
		case bytes.Equal(recorded, key), recorded == nil, !used:
			if _, err := tx.ExecContext(ctx, "UPDATE local SET spool_key = ?, previous_spool_key = ?", key, previous); err != nil {
				return fmt.Errorf("recording the spool key: %w", err)
			}
			return nil
		default:
			return &OtherSpoolKeyError{Recorded: recorded, Previous: previous, Replaced: replaced}
		}
	})
	return moved, err
}

// ReplaceSpoolKeyChain is ReplaceSpoolKey for a succession: previous are
// the keys key replaced, newest first, as the spool's chain of statements
// vouches for them (previous[0] the one key replaced, previous[1] the one
// previous[0] replaced, ...). A database that records any of them moves
// its record to key, as not used yet, with previous[0] as its previous
// key, and reports true; otherwise it is ReplaceSpoolKey(key,
// previous[0]). Either way the database then trusts previous[1:] too,
// each until its cutover (EarlierSpoolKeys): those it trusted already
// keep theirs. Moving from previous[i] (i > 0), the keys before it are
// trusted as well: the log's entries before it were applied under it.
func (s *Store) ReplaceSpoolKeyChain(ctx context.Context, key []byte, previous [][]byte) (moved bool, err error) {
	if len(previous) == 0 {
		return false, errors.New("mailstore: no previous spool key")
	}
	for _, p := range previous {
		if len(p) != 64 {
			return false, fmt.Errorf("mailstore: a previous spool key of %d bytes, want 64", len(p))
		}
	}
	err = s.writeTx(ctx, "recording the spool key", func(tx *sql.Tx) error {
		var recorded []byte
		if err := tx.QueryRowContext(ctx, "SELECT spool_key FROM local").Scan(&recorded); err != nil {
			return fmt.Errorf("reading the spool key: %w", err)
		}
		if i := slices.IndexFunc(previous[1:], func(p []byte) bool { return bytes.Equal(p, recorded) }); i >= 0 {
			// Recorded a key two or more replacements back: moved as
			// ReplaceSpoolKey moves from previous[0].
			moved = true
			if _, err := tx.ExecContext(ctx, "UPDATE local SET spool_key = ?, previous_spool_key = ?, spool_key_used = 0, spool_key_cutover = 0", key, previous[0]); err != nil {
				return fmt.Errorf("replacing the spool key: %w", err)
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM earlier_spool_keys"); err != nil {
				return fmt.Errorf("replacing the spool key: %w", err)
			}
			return insertEarlier(ctx, tx, previous[1:])
		}
		return nil
	})
	if err != nil || moved {
		return moved, err
	}
	if moved, err = s.ReplaceSpoolKey(ctx, key, previous[0]); err != nil {
		return moved, err
	}
	return moved, s.writeTx(ctx, "recording the earlier spool keys", func(tx *sql.Tx) error {
		return insertEarlier(ctx, tx, previous[1:])
	})
}

// insertEarlier makes earlier the keys before previous_spool_key, newest
// first, keeping the cutover of each the database trusted already.
func insertEarlier(ctx context.Context, tx *sql.Tx, earlier [][]byte) error {
	rows, err := tx.QueryContext(ctx, "SELECT key, cutover FROM earlier_spool_keys")
	if err != nil {
		return fmt.Errorf("reading the earlier spool keys: %w", err)
	}
	cut := map[string]int64{}
	for rows.Next() {
		var k []byte
		var c int64
		if err := rows.Scan(&k, &c); err != nil {
			rows.Close()
			return fmt.Errorf("reading the earlier spool keys: %w", err)
		}
		cut[string(k)] = c
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("reading the earlier spool keys: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM earlier_spool_keys"); err != nil {
		return fmt.Errorf("recording the earlier spool keys: %w", err)
	}
	for i, k := range earlier {
		if _, err := tx.ExecContext(ctx, "INSERT INTO earlier_spool_keys (ord, key, cutover) VALUES (?, ?, ?)", i+2, k, cut[string(k)]); err != nil {
			return fmt.Errorf("recording the earlier spool keys: %w", err)
		}
	}
	return nil
}

// EarlierSpoolKey is a spool key before the previous one the database
// trusts (ReplaceSpoolKeyChain), with its cutover: the position of the
// first entry the database applied signed by a later key of the chain; 0:
// none yet.
type EarlierSpoolKey struct {
	Key     []byte
	Cutover uint64
}

// EarlierSpoolKeys returns the spool keys before the previous one, newest
// first.
func (s *Store) EarlierSpoolKeys(ctx context.Context) ([]EarlierSpoolKey, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT key, cutover FROM earlier_spool_keys ORDER BY ord")
	if err != nil {
		return nil, fmt.Errorf("reading the earlier spool keys: %w", err)
	}
	defer rows.Close()
	var out []EarlierSpoolKey
	for rows.Next() {
		var e EarlierSpoolKey
		var c int64
		if err := rows.Scan(&e.Key, &c); err != nil {
			return nil, fmt.Errorf("reading the earlier spool keys: %w", err)
		}
		e.Cutover = uint64(c)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the earlier spool keys: %w", err)
	}
	return out, nil
}

// KeepEarlierSpoolKeyCutover records at as the cutover of the earlier
// spool key key, unless it has one.
func (s *Store) KeepEarlierSpoolKeyCutover(ctx context.Context, key []byte, at uint64) error {
	return s.writeTx(ctx, "recording an earlier spool key's cutover", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE earlier_spool_keys SET cutover = ? WHERE key = ? AND cutover = 0", int64(at), key); err != nil {
			return fmt.Errorf("recording an earlier spool key's cutover: %w", err)
		}
		return nil
	})
}

// KeepSpoolKeyCutover records that the state a checkpoint restored holds
// an entry signed by the recorded spool key, the first at position at:
// the key is used (SpoolKeyUsed) and the cutover lies at or before at
// (SpoolKeyCutover). A key used already keeps its record.
func (s *Store) KeepSpoolKeyCutover(ctx context.Context, at uint64) error {
	return s.writeTx(ctx, "recording the spool key as used", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE local SET spool_key_used = 1, spool_key_cutover = ? WHERE spool_key_used = 0", int64(at)); err != nil {
			return fmt.Errorf("recording the spool key as used: %w", err)
		}
		return nil
	})
}

// SpoolKeyCutover returns the position of the first entry signed by the
// recorded spool key that the database applied: deliveries signed by the
// previous key (ReplaceSpoolKey) are refused after it. 0: none applied, or
// the first was applied before schema version 32 (SpoolKeyUsed says which).
func (s *Store) SpoolKeyCutover(ctx context.Context) (uint64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var pos int64
	if err := s.rdb.QueryRowContext(ctx, "SELECT spool_key_cutover FROM local").Scan(&pos); err != nil {
		return 0, fmt.Errorf("reading the spool key's cutover: %w", err)
	}
	return uint64(pos), nil
}

// SpoolKeyUsed reports whether the database has applied an entry signed by
// the spool key it records (TrustSpoolKey): once it has, that key is the
// log's, and entries by other keys are someone else's, rejected and passed
// by; until then the key may be a wrong one given at the first start.
func (s *Store) SpoolKeyUsed(ctx context.Context) (bool, error) {
	if err := s.check(); err != nil {
		return false, err
	}
	var used bool
	if err := s.rdb.QueryRowContext(ctx, "SELECT spool_key_used FROM local").Scan(&used); err != nil {
		return false, fmt.Errorf("reading whether the spool key was used: %w", err)
	}
	return used, nil
}
