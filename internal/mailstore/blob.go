package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/devicedb"
)

// Large bodies in pieces.
//
// Each connection's SQLite runs in a Wasm memory of its own that grows and
// never shrinks while the connection is open (docs/MAILSTORE.md). A body
// bound to an INSERT is copied into it, and SQLite builds the row's record
// from that copy, a second one; a body read as a column is read whole into
// it. So a message of 16 MB (50 MB may be mailed) grew the writer by 44 MB
// as it was applied, the writer again by 16 MB as it was indexed and a
// reader by 32 MB as a client fetched it, each kept until the connection
// had been idle for connIdle.
//
// A body of more than blobPiece bytes is therefore stored as a zeroblob of
// its size, whose bytes are then written through SQLite's incremental blob
// handle blobPiece at a time, and read back the same way into a buffer of
// its size: SQLite's memory holds one piece of it at a time, beside the
// pages it writes or reads. The bytes stored are the same; the undo log's
// record of the blobs row inserted (its key) is the same, and undoing it
// deletes the row as before.

// blobPiece is the most of a body's bytes that SQLite's memory holds at
// once when the body is stored or read through a blob handle; bodies up to
// this size are bound and read as columns.
const blobPiece = 256 << 10

// onSQLite runs f on the SQLite connection under c, whose transaction is
// open. The driver panics where SQLite's memory runs out: that is
// sqlite3.NOMEM returned, for the transaction to roll back. It is not
// driver.ErrBadConn: database/sql would close c at once, and wait for
// the open transaction's hold on c for ever.
func onSQLite(c *sql.Conn, f func(*sqlite3.Conn) error) error {
	return c.Raw(func(dc any) (err error) {
		rc, ok := dc.(interface{ Raw() *sqlite3.Conn })
		if !ok {
			return fmt.Errorf("the driver's connection %T gives no SQLite connection", dc)
		}
		defer func() {
			if r := recover(); r != nil {
				if !devicedb.OutOfMemory(r) {
					panic(r)
				}
				err = sqlite3.NOMEM
			}
		}()
		return f(rc.Raw())
	})
}

// insertBlob stores b as the bytes of body bid in table blobs, through c
// (the connection tx runs on) in pieces when b is larger than blobPiece;
// c nil binds it whole.
func insertBlob(ctx context.Context, exec func(ctx context.Context, query string, args ...any) (sql.Result, error), c *sql.Conn, bid int64, b []byte) error {
	if b == nil {
		b = []byte{}
	}
	if c == nil || len(b) <= blobPiece {
		_, err := exec(ctx, "INSERT INTO blobs (bid, data) VALUES (?, ?)", bid, b)
		return err
	}
	if _, err := exec(ctx, "INSERT INTO blobs (bid, data) VALUES (?, zeroblob(?))", bid, len(b)); err != nil {
		return err
	}
	return onSQLite(c, func(sc *sqlite3.Conn) error {
		h, err := sc.OpenBlob("main", "blobs", "data", bid, true)
		if err != nil {
			return fmt.Errorf("opening body %d's bytes: %w", bid, err)
		}
		for rest := b; len(rest) > 0; {
			n := min(len(rest), blobPiece)
			if _, err := h.Write(rest[:n]); err != nil {
				h.Close()
				return fmt.Errorf("writing body %d's bytes: %w", bid, err)
			}
			rest = rest[n:]
		}
		return h.Close()
	})
}

// readBlob reads n bytes of body bid from its start (all of them when n
// is its size) through c's blob handle, blobPiece at a time, within the
// transaction open on c.
func readBlob(c *sql.Conn, bid, n int64) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("reading body %d's bytes: no connection", bid)
	}
	var out []byte
	err := onSQLite(c, func(sc *sqlite3.Conn) (err error) {
		out, err = readBlobRaw(sc, bid, n)
		return err
	})
	return out, err
}

// readBlobRaw is readBlob on a SQLite connection itself.
func readBlobRaw(sc *sqlite3.Conn, bid, n int64) ([]byte, error) {
	h, err := sc.OpenBlob("main", "blobs", "data", bid, false)
	if err != nil {
		return nil, fmt.Errorf("opening body %d's bytes: %w", bid, err)
	}
	defer h.Close()
	n = min(max(n, 0), h.Size())
	out := make([]byte, n)
	for off := int64(0); off < n; {
		k := min(n-off, blobPiece)
		if _, err := h.Read(out[off : off+k]); err != nil && !(errors.Is(err, io.EOF) && off+k == h.Size()) {
			return nil, fmt.Errorf("reading body %d's bytes: %w", bid, err)
		}
		off += k
	}
	return out, nil
}

// BlobReader reads a body's bytes through a blob handle on c, the
// connection of a read transaction, kept open from the first read to
// Close: SQLite finds a piece of a large body from the handle's list of
// its pages, where a handle opened for each piece walked the body's pages
// from its start each time. While it is open, the connection's page cache
// is scanCacheKiB, as for a wide scan: the body's pages go through it
// once, and filling the reader's cache with them would grow that
// connection's memory for good.
type BlobReader struct {
	c         *sql.Conn
	bid, size int64
	h         *sqlite3.Blob
	cache     int64 // the connection's cache_size before, to restore
}

// ReadAt reads len(p) bytes of the body from off, at most blobPiece at
// a time through SQLite's memory.
func (r *BlobReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading body %d's bytes at %d: negative offset", r.bid, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := 0
	err := onSQLite(r.c, func(sc *sqlite3.Conn) error {
		if r.h == nil {
			if err := r.open(sc); err != nil {
				return err
			}
		}
		if _, err := r.h.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("reading body %d's bytes at %d: %w", r.bid, off, err)
		}
		for n < len(p) && off+int64(n) < r.h.Size() {
			k := int(min(int64(len(p)-n), blobPiece, r.h.Size()-off-int64(n)))
			got, err := r.h.Read(p[n : n+k])
			n += got
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("reading body %d's bytes at %d: %w", r.bid, off+int64(n), err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// open opens the blob handle and makes the page cache small.
func (r *BlobReader) open(sc *sqlite3.Conn) error {
	st, _, err := sc.Prepare("PRAGMA cache_size")
	if err != nil {
		return fmt.Errorf("opening body %d's bytes: %w", r.bid, err)
	}
	if st.Step() {
		r.cache = st.ColumnInt64(0)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("opening body %d's bytes: %w", r.bid, err)
	}
	if r.cache != 0 && r.cache != -scanCacheKiB {
		if err := sc.Exec(fmt.Sprintf("PRAGMA cache_size = -%d", scanCacheKiB)); err != nil {
			return fmt.Errorf("opening body %d's bytes: %w", r.bid, err)
		}
	}
	h, err := sc.OpenBlob("main", "blobs", "data", r.bid, false)
	if err != nil {
		return fmt.Errorf("opening body %d's bytes: %w", r.bid, err)
	}
	r.h = h
	return nil
}

// Close closes the blob handle and gives the connection its page cache
// back. It must be called before the Fetch callback that gave the reader
// returns.
func (r *BlobReader) Close() error {
	if r.h == nil {
		return nil
	}
	return onSQLite(r.c, func(sc *sqlite3.Conn) error {
		err := r.h.Close()
		r.h = nil
		if r.cache != 0 && r.cache != -scanCacheKiB {
			err = errors.Join(err, sc.Exec(fmt.Sprintf("PRAGMA cache_size = %d", r.cache)))
		}
		if err != nil {
			return fmt.Errorf("closing body %d's bytes: %w", r.bid, err)
		}
		return nil
	})
}
