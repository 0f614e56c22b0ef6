package mailstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/devicedb"
)

// SnapshotInfo describes the snapshot WriteSnapshot writes.
type SnapshotInfo struct {
	Position uint64
	Size     int64             // bytes of its encoding
	Digest   [sha256.Size]byte // SHA-256 of its encoding
	Messages int
	// Keep is Snapshot.Keep: the positions of the entries it needs,
	// sorted, without repeats.
	Keep []uint64
}

// WriteSnapshot hands over the encoding EncodeSnapshot(Snapshot()) would
// return without holding the state in memory: inside one read transaction
// it encodes the state once, straight from the rows, to measure and hash
// it, then calls use with what that told and a function that encodes the
// same bytes again into a writer (it fails if they differ). use runs inside
// the transaction; its encode must not be called after it returns. A
// snapshot at position 0 is still described, but there is nothing to
// write. Errors are Snapshot's (ErrQueued while changes wait for the log).
//
// Canonical CBOR gives every array and byte string its length first, so
// each list is counted before it is written; within the transaction the
// counts and the rows agree.
func (s *Store) WriteSnapshot(ctx context.Context, use func(info SnapshotInfo, encode func(io.Writer) error) error) error {
	if err := s.check(); err != nil {
		return err
	}
	var err error
	rerr := s.readRaw(ctx, func(c *sqlite3.Conn) {
		src := rawSource{c}
		e := &snapEncoder{src: src}
		var queued uint64
		if queued, err = e.count("SELECT count(*) FROM queue"); err != nil {
			return
		}
		if queued > 0 {
			err = fmt.Errorf("taking snapshot: %d queued: %w", queued, ErrQueued)
			return
		}
		err = writeSnapshot(src, use)
	})
	if err == nil && rerr != nil {
		err = fmt.Errorf("taking snapshot: %w", rerr)
	}
	return err
}

// WriteLogSnapshot is WriteSnapshot of the log's state alone, also while
// changes wait in the queue: in a write transaction that is never
// committed, it takes the whole queue back, as an apply does, and encodes
// the state then. It holds the writer meanwhile, so applies and changes
// being queued wait for the encoding (not for use's upload, if use only
// writes a file). For a device whose queue holds only changes the spool
// refuses for now (an APPEND past the quota): the checkpoint that gives
// back the room of the mail deleted is the log's, whatever waits.
func (s *Store) WriteLogSnapshot(ctx context.Context, use func(info SnapshotInfo, encode func(io.Writer) error) error) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return devicedb.Explain(s.path, fmt.Errorf("taking snapshot: %w", err))
	}
	defer end() // never committed: the queue stays applied
	q, err := loadQueue(ctx, tx)
	if err != nil {
		return fmt.Errorf("taking snapshot: %w", err)
	}
	if len(q) > 0 {
		if err := undoQueued(ctx, tx, q[0].seq); err != nil {
			return fmt.Errorf("taking snapshot: %w", err)
		}
	}
	// The encoding reads the rows inside tx, through database/sql: the
	// driver's own connection is not to be used while database/sql holds
	// a transaction on it.
	return writeSnapshot(sqlSource{ctx, tx}, use)
}

// writeSnapshot is WriteSnapshot in a transaction on src.
func writeSnapshot(src snapSource, use func(info SnapshotInfo, encode func(io.Writer) error) error) error {
	e := &snapEncoder{src: src}
	h := sha256.New()
	cw := &countingWriter{w: h}
	if err := e.encode(cw, true); err != nil {
		return err
	}
	info := SnapshotInfo{Position: e.pos, Size: cw.n, Messages: e.messages, Keep: e.keep}
	h.Sum(info.Digest[:0])
	slices.Sort(info.Keep)
	info.Keep = slices.Compact(info.Keep)
	encode := func(w io.Writer) error {
		h := sha256.New()
		cw := &countingWriter{w: io.MultiWriter(w, h)}
		again := &snapEncoder{src: src}
		if err := again.encode(cw, false); err != nil {
			return err
		}
		if cw.n != info.Size || !slices.Equal(h.Sum(nil), info.Digest[:]) {
			return fmt.Errorf("taking snapshot: the state read twice in one transaction differs (%d and %d bytes)", info.Size, cw.n)
		}
		return nil
	}
	return use(info, encode)
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// snapEncoder writes the canonical CBOR of a Snapshot (docs/FORMAT.md
// section 5) from the rows snapshotOf reads, the same bytes as
// EncodeSnapshot of what it returns: a map with integer keys in ascending
// order, integers in their shortest form, definite lengths, the toarray
// structs as arrays, nil byte strings as null, and Chain and Superseded
// left out when empty. It reads the rows through a snapSource: a store's
// on the SQLite connection itself (rawSource), a Rebase's through its
// transaction (sqlSource).
type snapEncoder struct {
	src snapSource
	w   *bufio.Writer
	buf []byte // a head or fixed-size field being written

	pos      uint64
	messages int
	keep     []uint64 // when collecting: every message's body position
}

// CBOR major types.
const (
	cborUint  = 0
	cborNeg   = 1
	cborBytes = 2
	cborText  = 3
	cborArray = 4
	cborMap   = 5
	cborNull  = 0xf6
)

func (e *snapEncoder) head(major byte, n uint64) {
	b := e.buf[:0]
	m := major << 5
	switch {
	case n < 24:
		b = append(b, m|byte(n))
	case n <= 0xff:
		b = append(b, m|24, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= 0xffffffff:
		b = binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, m|27), n)
	}
	e.w.Write(b)
	e.buf = b
}

func (e *snapEncoder) uint(n uint64) { e.head(cborUint, n) }

func (e *snapEncoder) int(n int64) {
	if n >= 0 {
		e.head(cborUint, uint64(n))
	} else {
		e.head(cborNeg, uint64(-(n + 1)))
	}
}

func (e *snapEncoder) bytes(b []byte) {
	if b == nil {
		e.w.WriteByte(cborNull)
		return
	}
	e.head(cborBytes, uint64(len(b)))
	e.w.Write(b)
}

func (e *snapEncoder) text(b []byte) {
	e.head(cborText, uint64(len(b)))
	e.w.Write(b)
}

// snapRow is a row the encoder reads: *sqlite3.Stmt's columns, raw (valid
// until the next row), or sqlRow's.
type snapRow interface {
	ColumnInt64(col int) int64
	ColumnRawBlob(col int) []byte // nil for NULL
	ColumnRawText(col int) []byte
}

// snapSource runs the encoder's queries in one transaction, calling row for
// each row, and returns how many there were.
type snapSource interface {
	rows(query string, row func(snapRow) error) (uint64, error)
}

// rawSource reads on the SQLite connection itself: through database/sql
// every integer and byte string of every row would be an allocation.
type rawSource struct{ c *sqlite3.Conn }

func (r rawSource) rows(query string, row func(snapRow) error) (uint64, error) {
	st, _, err := r.c.Prepare(query)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	var n uint64
	for st.Step() {
		if err := row(st); err != nil {
			return 0, err
		}
		n++
	}
	return n, st.Err()
}

// sqlSource reads through database/sql: a Rebase's transaction, which is
// no read connection's.
type sqlSource struct {
	ctx context.Context
	q   queryer
}

// sqlRow is a row scanned through database/sql.
type sqlRow []any

func (r sqlRow) ColumnInt64(col int) int64 {
	v, _ := r[col].(int64)
	return v
}

func (r sqlRow) ColumnRawBlob(col int) []byte {
	switch v := r[col].(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	return nil
}

func (r sqlRow) ColumnRawText(col int) []byte { return r.ColumnRawBlob(col) }

func (s sqlSource) rows(query string, row func(snapRow) error) (uint64, error) {
	rows, err := s.q.QueryContext(s.ctx, query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	vals := make(sqlRow, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	var n uint64
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return 0, err
		}
		if err := row(vals); err != nil {
			return 0, err
		}
		n++
	}
	return n, rows.Err()
}

// rows runs query through the source.
func (e *snapEncoder) rows(query string, row func(snapRow) error) (uint64, error) {
	n, err := e.src.rows(query, row)
	if err != nil {
		return 0, fmt.Errorf("taking snapshot: %w", err)
	}
	return n, nil
}

// count runs a count(*) query.
func (e *snapEncoder) count(query string) (uint64, error) {
	var n int64
	_, err := e.rows(query, func(st snapRow) error {
		n = st.ColumnInt64(0)
		return nil
	})
	return uint64(n), err
}

// list writes an array of n items, or a byte string of size bytes, and
// then every row of query through row, checking that there were n.
func (e *snapEncoder) list(major byte, size, n uint64, query string, row func(st snapRow) error) error {
	e.head(major, size)
	got, err := e.rows(query, row)
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("taking snapshot: %d rows counted, %d read: %q", n, got, query)
	}
	return nil
}

// encode writes the snapshot to w; collect gathers the kept positions.
func (e *snapEncoder) encode(w io.Writer, collect bool) error {
	e.w = bufio.NewWriterSize(w, 32<<10)
	e.buf = make([]byte, 0, 24)
	var pos, uv int64
	var chain []byte
	if _, err := e.rows("SELECT s.position, s.next_uidvalidity, c.hash FROM state s LEFT JOIN chain c ON c.pos = s.position",
		func(st snapRow) error {
			pos, uv = st.ColumnInt64(0), st.ColumnInt64(1)
			chain = bytes.Clone(st.ColumnRawBlob(2))
			return nil
		}); err != nil {
		return err
	}
	e.pos = uint64(pos)
	var n [6]uint64
	for i, q := range []string{
		"SELECT count(*) FROM mailboxes",
		"SELECT count(*) FROM subscriptions",
		"SELECT count(*) FROM keywords",
		"SELECT count(*) FROM messages m JOIN bodies b ON b.bid = m.body",
		"SELECT count(*) FROM entries WHERE old = 0",
		"SELECT count(*) FROM entries WHERE old = 1",
	} {
		var err error
		if n[i], err = e.count(q); err != nil {
			return err
		}
	}
	nMailboxes, nSubs, nKeywords, nMessages, nEntries, nSuperseded := n[0], n[1], n[2], n[3], n[4], n[5]
	e.messages = int(nMessages)
	if collect {
		e.keep = make([]uint64, 0, nMessages)
	}

	pairs := uint64(8)
	if len(chain) > 0 {
		pairs++
	}
	if nSuperseded > 0 {
		pairs++
	}
	e.head(cborMap, pairs)
	e.uint(1)
	e.uint(SnapshotVersion)
	e.uint(2)
	e.uint(uint64(pos))
	e.uint(3)
	e.uint(uint64(uint32(uv)))

	e.uint(4)
	index := map[int64]uint64{}
	if err := e.list(cborArray, nMailboxes, nMailboxes, "SELECT mid, id, name, special_use, uidvalidity, uidnext, highest_modseq FROM mailboxes ORDER BY id",
		func(st snapRow) error {
			index[st.ColumnInt64(0)] = uint64(len(index))
			e.head(cborArray, 6)
			e.bytes(st.ColumnRawBlob(1))
			e.text(st.ColumnRawText(2))
			e.text(st.ColumnRawText(3))
			e.uint(uint64(uint32(st.ColumnInt64(4))))
			e.uint(uint64(uint32(st.ColumnInt64(5))))
			e.uint(uint64(st.ColumnInt64(6)))
			return nil
		}); err != nil {
		return err
	}
	e.uint(5)
	if err := e.list(cborArray, nSubs, nSubs, "SELECT name FROM subscriptions ORDER BY name", func(st snapRow) error {
		e.text(st.ColumnRawText(0))
		return nil
	}); err != nil {
		return err
	}
	e.uint(6)
	if err := e.list(cborArray, nKeywords, nKeywords, "SELECT name FROM keywords ORDER BY fold", func(st snapRow) error {
		e.text(st.ColumnRawText(0))
		return nil
	}); err != nil {
		return err
	}

	e.uint(7)
	if err := e.list(cborArray, nMessages, nMessages, `SELECT m.id, m.mailbox, m.uid, m.flags, m.keywords, m.date, m.size, m.modseq, b.origin, b.digest
		FROM messages m JOIN bodies b ON b.bid = m.body ORDER BY m.id`,
		func(st snapRow) error {
			origin := st.ColumnInt64(8)
			if origin <= 0 {
				return fmt.Errorf("message %x: %w", st.ColumnRawBlob(0), ErrNoOrigin)
			}
			e.head(cborArray, 10)
			e.bytes(st.ColumnRawBlob(0))
			e.uint(uint64(uint32(index[st.ColumnInt64(1)])))
			e.uint(uint64(uint32(st.ColumnInt64(2))))
			e.uint(uint64(uint8(st.ColumnInt64(3))))
			e.text(st.ColumnRawText(4))
			e.int(st.ColumnInt64(5))
			e.int(st.ColumnInt64(6))
			e.uint(uint64(st.ColumnInt64(7)))
			e.uint(uint64(origin))
			e.bytes(st.ColumnRawBlob(9))
			if collect {
				e.keep = append(e.keep, uint64(origin))
			}
			return nil
		}); err != nil {
		return err
	}

	e.uint(8)
	if err := e.entries(0, nEntries); err != nil {
		return err
	}
	if len(chain) > 0 {
		e.uint(9)
		e.bytes(chain)
	}
	if nSuperseded > 0 {
		e.uint(10)
		if err := e.entries(1, nSuperseded); err != nil {
			return err
		}
	}
	return e.w.Flush()
}

// entries writes the entries of one kind (entryList) as one byte string.
func (e *snapEncoder) entries(old int, n uint64) error {
	return e.list(cborBytes, n*24, n, fmt.Sprintf("SELECT id, pos FROM entries WHERE old = %d ORDER BY id", old), func(st snapRow) error {
		id := st.ColumnRawBlob(0)
		if len(id) != 16 {
			return fmt.Errorf("entry id of %d bytes", len(id))
		}
		e.w.Write(id)
		e.w.Write(binary.BigEndian.AppendUint64(e.buf[:0], uint64(st.ColumnInt64(1))))
		return nil
	})
}
