package mailstore

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/command"
	"cspool/internal/devicedb"
)

// Want says which of a message's stored parts to load besides its metadata
// (id, UID, flags, internal date, size, modseq), which always come.
type Want uint16

const (
	WantEnvelope  Want = 1 << iota // Message.Envelope
	WantStructure                  // Message.BodyStructure
	WantHeader                     // Message.Header: the raw header bytes
	WantRaw                        // Message.Raw: the whole message, byte for byte
	// WantEnvelopeWire: Message.EnvelopeWire, the envelope's IMAP form,
	// where the body has one; where it has none, Message.Envelope.
	WantEnvelopeWire
	// WantStructureWire: Message.StructureWire, the body structure's IMAP
	// form as BODYSTRUCTURE, where the body has one; where it has none,
	// Message.BodyStructure. With both bits, a body lacking either form
	// gets the stored values for both, and no form.
	WantStructureWire
	// WantMetadataOnly: the metadata alone, read from the messages table
	// without the bodies': HeaderLen and Parse are left zero. Not with
	// the bits above. (With the two bits above alone, HeaderLen and
	// Parse are left zero too.)
	WantMetadataOnly
	// WantListing, with WantMetadataOnly and for FetchForms only: the
	// UID, flags, internal date and size alone, read from the index that
	// holds them (messages_listing, schema 14) without the table's rows;
	// ID and ModSeq are left zero, and LoadRaw cannot load the message.
	// With WantEnvelopeWire, WantStructureWire or both instead of
	// WantMetadataOnly, the same and those IMAP forms, the messages read
	// from the index (which holds the body since schema 17) and a forms
	// or structures row, or both, for each.
	WantListing
	// WantLargeRawLater, with WantRaw and for Fetch and Scan: a message
	// larger than 256 KiB (blobPiece) comes with Raw nil, and fn reads
	// it with LoadRaw, from the same snapshot and in pieces, when it is
	// ready to hold it (imapd waits for its FETCH memory budget first).
	WantLargeRawLater
)

// Message is one message as FETCH and SEARCH need it.
type Message struct {
	ID           command.ID
	Mailbox      command.ID
	UID          UID
	Flags        []string // system flags first, then keywords as first spelled
	InternalDate time.Time
	Size         int64 // RFC822.SIZE: the raw bytes' length
	ModSeq       uint64
	HeaderLen    int64 // the header's length, blank line included: Raw[:HeaderLen]
	Parse        uint8 // the parser's status (Parser.Parse)

	// Envelope and BodyStructure (extended data) are as the parser
	// stored them (Parser.Parse).
	Envelope      []byte // with WantEnvelope
	EnvelopeWire  []byte // with WantEnvelopeWire: as a FETCH response writes it; nil: see Envelope
	StructureWire []byte // with WantStructureWire: as BODYSTRUCTURE; nil: see BodyStructure
	BodyStructure []byte // with WantStructure
	Header        []byte // with WantHeader
	Raw           []byte // with WantRaw

	bodyID int64
	loader queryer
	conn   *sql.Conn     // within a Scan's fn: the connection of its snapshot, for LoadRaw of a large body
	reads  *atomic.Int64 // within a Scan's fn: the store's bodyReads
	// storedMin, within a Scan's fn: the size under which StoredTextHas
	// does not look for stored texts (storedTextShare).
	storedMin int64
}

// LoadRaw returns the message's raw bytes: Raw if it was loaded, else read
// now (for SEARCH BODY/TEXT, only on the messages that need it). Within a
// Fetch callback it reads from the same snapshot.
func (m *Message) LoadRaw(ctx context.Context) ([]byte, error) {
	if m.Raw != nil {
		return m.Raw, nil
	}
	if m.loader == nil {
		return nil, errors.New("loading message body: no store")
	}
	if m.reads != nil {
		m.reads.Add(1)
	}
	if m.conn != nil && m.Size > blobPiece {
		// In pieces, as loadLarge reads it: SQLite's memory holds a
		// piece at a time, not the whole body.
		data, err := readBlob(m.conn, m.bodyID, math.MaxInt64)
		if err != nil {
			return nil, fmt.Errorf("loading message %s: %w", m.ID, err)
		}
		return data, nil
	}
	var data []byte
	if err := m.loader.QueryRowContext(ctx, "SELECT data FROM blobs WHERE bid = ?", m.bodyID).Scan(&data); err != nil {
		return nil, fmt.Errorf("loading message %s: %w", m.ID, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// Detached returns a copy of m that reads nothing more from the store,
// for testing it on another goroutine than the scan's: its raw bytes
// loaded now (through the scan's snapshot, within a Scan's fn), which
// its LoadRaw gives, and no stored texts (StoredTextHas says it has none,
// and the caller tests the message itself, which gives the same answer:
// searchtext.go). The snapshot's connection is for the scan's goroutine
// alone; the copy shares only m's slices, which nothing writes.
func (m *Message) Detached(ctx context.Context) (*Message, error) {
	raw, err := m.LoadRaw(ctx)
	if err != nil {
		return nil, err
	}
	d := *m
	d.Raw = raw
	d.loader, d.conn, d.reads, d.storedMin = nil, nil, nil, 0
	return &d, nil
}

// RawAt returns a reader of the message's bytes (Size of them) read from
// the store through the snapshot it came from, blobPiece at a time, for a
// message whose Raw was left for later (WantLargeRawLater): a reader of
// it need not hold the whole message. Only within the callback of Fetch,
// and closed before it returns; ok is false elsewhere, and when the
// message is not read in pieces (LoadRaw reads it whole then).
func (m *Message) RawAt() (r *BlobReader, ok bool) {
	if m.Raw != nil || m.conn == nil || m.Size <= blobPiece {
		return nil, false
	}
	return &BlobReader{c: m.conn, bid: m.bodyID, size: m.Size}, true
}

func fetchQuery(want Want) string { return fetchQueryWith(want, false) }

// fetchQueryWith is fetchQuery; with pieces, the header and the bytes of a
// message larger than blobPiece are left NULL, for the caller to read in
// pieces (loadLarge).
func fetchQueryWith(want Want, pieces bool) string {
	if want&WantMetadataOnly != 0 {
		return "SELECT " + messageColumns + ", m.body, 0, 0" + messageFrom
	}
	// The stored forms are in forms (the envelope's) and structures
	// (the structure's), one narrow row per body in each: a FETCH
	// asking for them alone reads no bodies row (HeaderLen and Parse are
	// left zero), but for a body lacking a form.
	bodies := want&(WantEnvelope|WantStructure|WantHeader|WantRaw) != 0
	var b strings.Builder
	if bodies {
		b.WriteString("SELECT " + messageColumns + ", b.bid, b.header_len, b.parsed")
	} else {
		b.WriteString("SELECT " + messageColumns + ", m.body, 0, 0")
	}
	if want&WantEnvelope != 0 {
		b.WriteString(", b.envelope")
	}
	if want&WantStructure != 0 {
		b.WriteString(", b.structure")
	}
	small := func(col string) string {
		if pieces {
			return fmt.Sprintf("CASE WHEN m.size <= %d THEN %s END", blobPiece, col)
		}
		return col
	}
	if want&WantHeader != 0 {
		b.WriteString(", " + small("(SELECT substr(data, 1, b.header_len) FROM blobs WHERE bid = b.bid)"))
	}
	if want&WantRaw != 0 {
		b.WriteString(", " + small("(SELECT data FROM blobs WHERE bid = b.bid)"))
	}
	// The stored envelope and structure come only where a form asked
	// for is missing.
	var missing []string
	if want&WantEnvelopeWire != 0 {
		missing = append(missing, "f.envelope IS NULL")
	}
	if want&WantStructureWire != 0 {
		missing = append(missing, "st.structure IS NULL")
	}
	cond := strings.Join(missing, " OR ")
	decoded := func(col string) string {
		if bodies {
			return "b." + col
		}
		return "(SELECT " + col + " FROM bodies WHERE bid = m.body)"
	}
	if want&WantEnvelopeWire != 0 {
		b.WriteString(", f.envelope, iif(" + cond + ", " + decoded("envelope") + ", NULL)")
	}
	if want&WantStructureWire != 0 {
		b.WriteString(", st.structure, iif(" + cond + ", " + decoded("structure") + ", NULL)")
	}
	b.WriteString(messageFrom)
	if bodies {
		b.WriteString("JOIN bodies b ON b.bid = m.body ")
	}
	if want&WantEnvelopeWire != 0 {
		b.WriteString("LEFT JOIN forms f ON f.bid = m.body ")
	}
	if want&WantStructureWire != 0 {
		b.WriteString("LEFT JOIN structures st ON st.bid = m.body ")
	}
	return b.String()
}

// fetchTargets are the destinations of one row's scan; a scan of many
// rows reuses one, so a row costs no allocation for them.
type fetchTargets struct {
	row                                                messageRow
	id, mbid                                           []byte
	kw                                                 string
	bid, headerLen                                     int64
	parsed                                             int
	env, bs, header, raw, wire, wireEnv, swire, wireBS []byte
	dest                                               [22]any
}

func scanFetched(r scanner, want Want, t *fetchTargets) (*Message, error) {
	if t == nil {
		t = new(fetchTargets)
	}
	*t = fetchTargets{}
	row := &t.row
	dest := append(t.dest[:0], &row.rid, &t.id, &row.mailbox, &t.mbid, &row.uid, &row.body, &row.date, &row.size,
		&row.flags.bits, &t.kw, &row.modSeq, &t.bid, &t.headerLen, &t.parsed)
	if want&WantEnvelope != 0 {
		dest = append(dest, &t.env)
	}
	if want&WantStructure != 0 {
		dest = append(dest, &t.bs)
	}
	if want&WantHeader != 0 {
		dest = append(dest, &t.header)
	}
	if want&WantRaw != 0 {
		dest = append(dest, &t.raw)
	}
	if want&WantEnvelopeWire != 0 {
		dest = append(dest, &t.wire, &t.wireEnv)
	}
	if want&WantStructureWire != 0 {
		dest = append(dest, &t.swire, &t.wireBS)
	}
	if err := r.Scan(dest...); err != nil {
		return nil, err
	}
	id, mbid, kw, bid, headerLen, parsed := t.id, t.mbid, t.kw, t.bid, t.headerLen, t.parsed
	env, bs, header, raw, wire, wireEnv, swire, wireBS := t.env, t.bs, t.header, t.raw, t.wire, t.wireEnv, t.swire, t.wireBS
	m := &Message{
		UID: UID(row.uid), InternalDate: time.UnixMilli(row.date), Size: row.size,
		ModSeq: uint64(row.modSeq), HeaderLen: headerLen, Parse: uint8(parsed), bodyID: bid,
	}
	copy(m.ID[:], id)
	copy(m.Mailbox[:], mbid)
	row.flags.keywords = decodeKeywords(kw)
	m.Flags = row.flags.list()
	if want&WantEnvelope != 0 {
		m.Envelope = env
	}
	if want&WantStructure != 0 {
		m.BodyStructure = bs
	}
	// Where a form asked for is missing, none is given: the stored
	// values stand in for all of them, so the message is written one way.
	if (want&WantEnvelopeWire != 0 && wire == nil) || (want&WantStructureWire != 0 && swire == nil) {
		if want&WantEnvelopeWire != 0 && m.Envelope == nil {
			m.Envelope = wireEnv
		}
		if want&WantStructureWire != 0 && m.BodyStructure == nil {
			m.BodyStructure = wireBS
		}
	} else {
		m.EnvelopeWire, m.StructureWire = wire, swire
	}
	if want&WantHeader != 0 {
		m.Header = nonNil(header)
	}
	if want&WantRaw != 0 {
		m.Raw = nonNil(raw)
	}
	return m, nil
}

// loadLarge reads the header and the bytes want asks for of a message
// larger than blobPiece, which fetchQueryWith left out, in pieces through
// c, the connection of the read transaction (blob.go): read as a column,
// a message of 16 MB grew the reader's SQLite memory by 32 MB, kept until
// the connection closed.
func loadLarge(c *sql.Conn, m *Message, want Want) error {
	if m.Size <= blobPiece {
		return nil
	}
	var err error
	if want&WantHeader != 0 {
		if m.Header, err = readBlob(c, m.bodyID, m.HeaderLen); err != nil {
			return err
		}
	}
	if want&WantRaw != 0 && want&WantLargeRawLater != 0 {
		m.Raw = nil // for fn to read (LoadRaw)
	} else if want&WantRaw != 0 {
		if m.Raw, err = readBlob(c, m.bodyID, math.MaxInt64); err != nil {
			return err
		}
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Message returns the message with uid in mailbox.
func (s *Store) Message(ctx context.Context, mailbox command.ID, uid UID, want Want) (*Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	m, err := scanFetched(s.rdb.QueryRowContext(ctx, fetchQuery(want)+"WHERE mb.id = ? AND m.uid = ?", mailbox[:], int64(uid)), want, nil)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("message uid %d in %s: %w", uid, mailbox, ErrNoMessage)
	}
	if err != nil {
		return nil, fmt.Errorf("reading message uid %d in %s: %w", uid, mailbox, err)
	}
	m.loader = s.rdb
	return m, nil
}

// MessageByID returns the message with id, wherever it is.
func (s *Store) MessageByID(ctx context.Context, id command.ID, want Want) (*Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	m, err := scanFetched(s.rdb.QueryRowContext(ctx, fetchQuery(want)+"WHERE m.id = ?", id[:]), want, nil)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("message %s: %w", id, ErrNoMessage)
	}
	if err != nil {
		return nil, fmt.Errorf("reading message %s: %w", id, err)
	}
	m.loader = s.rdb
	return m, nil
}

// Fetch calls fn for each message of mailbox whose UID is in uids, in UID
// order, from one consistent snapshot. * (0) in a range stands for the
// largest UID in the mailbox (RFC 9051 section 9, seq-number), so 100:*
// includes the last message even when its UID is below 100. Only what want
// asks for is loaded, one row at a time, so fetching many messages never
// holds all their bodies; fn may call LoadRaw. The Message is fn's to keep.
// An error from fn stops Fetch and is returned.
func (s *Store) Fetch(ctx context.Context, mailbox command.ID, uids UIDSet, want Want, fn func(*Message) error) error {
	return s.fetch(ctx, mailbox, 0, uids, want, fn)
}

// fetch is Fetch, checking the mailbox's UIDVALIDITY against uv unless it
// is 0 (Selected).
func (s *Store) fetch(ctx context.Context, mailbox command.ID, uv uint32, uids UIDSet, want Want, fn func(*Message) error) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(uids) == 0 {
		return nil
	}
	return s.scan(ctx, mailbox, uv, want, func(last UID) (string, []any, func(UID) bool, uint64) {
		lo, hi, in := uidRanges(uids, last)
		return "AND m.uid BETWEEN ? AND ?", []any{int64(lo), int64(hi)}, in, uint64(hi) - uint64(lo) + 1
	}, fn)
}

// Scan calls fn for every message of mailbox, in UID order, from one
// consistent snapshot: the way to evaluate SEARCH (flags, dates and sizes
// come with every message; headers with WantHeader; bodies through LoadRaw,
// only when needed).
func (s *Store) Scan(ctx context.Context, mailbox command.ID, want Want, fn func(*Message) error) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.scan(ctx, mailbox, 0, want, nil, fn)
}

// selector turns the mailbox's largest UID (0 if empty) into a condition on
// m.uid, its arguments, an exact filter and how many UIDs the condition
// spans.
type selector func(last UID) (cond string, args []any, in func(UID) bool, span uint64)

// scan reads the messages of mailbox that sel selects (nil: all), in one
// read transaction, which also checks the mailbox's UIDVALIDITY against
// uv unless it is 0. A scan over scanSpan UIDs or more (a SEARCH of a
// large mailbox, its bodies read where the index does not hold them yet)
// reads through a page cache of scanCacheKiB, as a wide FetchForms does:
// the pages of that many messages are more than a reader's cache holds,
// and filling it would only grow that connection's memory for good.
func (s *Store) scan(ctx context.Context, mailbox command.ID, uv uint32, want Want, sel selector, fn func(*Message) error) error {
	conn, err := s.rdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("reading mailbox %s: %w", mailbox, err)
	}
	defer conn.Close()
	small := false
	defer func() {
		if small {
			restoreReadCache(conn)
		}
	}()
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("reading mailbox %s: %w", mailbox, err)
	}
	defer tx.Rollback()
	mb, err := mailboxByID(ctx, tx, mailbox)
	if err != nil {
		return err
	}
	if mb == nil {
		return fmt.Errorf("reading mailbox %s: %w", mailbox, ErrNoMailbox)
	}
	if err := checkValidity(ctx, tx, mailbox, uv); err != nil {
		return err
	}
	var last int64
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(uid), 0) FROM messages WHERE mailbox = ?", mb.mid).Scan(&last); err != nil {
		return fmt.Errorf("reading messages of %q: %w", mb.name, err)
	}
	cond, args, in, span := "", []any{mb.mid}, func(UID) bool { return true }, uint64(last)
	if sel != nil {
		var more []any
		cond, more, in, span = sel(UID(last))
		args = append(args, more...)
	}
	if span >= scanSpan {
		// Within the transaction: the cache is the connection's, and
		// restoreReadCache gives it its size back after.
		small = true
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", scanCacheKiB)); err != nil {
			return fmt.Errorf("reading messages of %q: %w", mb.name, err)
		}
	}
	rows, err := tx.QueryContext(ctx, fetchQueryWith(want, true)+"WHERE m.mailbox = ? "+cond+" ORDER BY m.uid", args...)
	if err != nil {
		return fmt.Errorf("reading messages of %q: %w", mb.name, err)
	}
	defer rows.Close()
	var targets fetchTargets
	loader := &txStmts{tx: tx}
	for rows.Next() {
		m, err := scanFetched(rows, want, &targets)
		if err != nil {
			return fmt.Errorf("reading messages of %q: %w", mb.name, err)
		}
		if !in(m.UID) {
			continue
		}
		if err := loadLarge(conn, m, want); err != nil {
			return fmt.Errorf("reading messages of %q: %w", mb.name, err)
		}
		m.loader, m.conn, m.reads, m.storedMin = loader, conn, &s.bodyReads, int64(s.textLimits.index/storedTextShare)
		err = fn(m)
		m.loader, m.conn, m.reads, m.storedMin = s.rdb, nil, nil, 0 // later calls read the current state
		if err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading messages of %q: %w", mb.name, err)
	}
	return nil
}

// FetchForms is Fetch for a FETCH the IMAP session writes itself: want
// holds only WantEnvelopeWire, WantStructureWire or WantMetadataOnly, and
// WantListing with WantMetadataOnly alone or with either form or both. The
// rows are read through the SQLite driver itself, not database/sql, and
// one Message serves every row: it and its slices are fn's only until fn
// returns (a row without a system flag's keywords costs no allocation).
// LoadRaw reads the current state, not the snapshot.
func (s *Store) FetchForms(ctx context.Context, mailbox command.ID, uids UIDSet, want Want, fn func(*Message) error) error {
	return s.fetchFormsIn(ctx, mailbox, 0, uids, want, fn)
}

// fetchFormsIn is FetchForms, checking the mailbox's UIDVALIDITY against
// uv unless it is 0 (Selected).
func (s *Store) fetchFormsIn(ctx context.Context, mailbox command.ID, uv uint32, uids UIDSet, want Want, fn func(*Message) error) error {
	if err := s.check(); err != nil {
		return err
	}
	forms := want & (WantEnvelopeWire | WantStructureWire)
	if want&^(WantEnvelopeWire|WantStructureWire|WantMetadataOnly|WantListing) != 0 || want&^WantListing == 0 ||
		(want&WantListing != 0 && want != WantMetadataOnly|WantListing && want != forms|WantListing) {
		return fmt.Errorf("reading mailbox %s: FetchForms cannot load %#b", mailbox, want)
	}
	if len(uids) == 0 {
		return nil
	}
	var fnErr error
	// The mailbox, its last UID and the rows are of one snapshot.
	err := s.readRawWith(ctx, wideSpan(uids), func(c *sqlite3.Conn) {
		fnErr = s.fetchForms(c, mailbox, uv, uids, want, fn)
	})
	if err != nil {
		return fmt.Errorf("reading mailbox %s: %w", mailbox, err)
	}
	return fnErr
}

// scanSpan is how many UIDs a FetchForms reads through the small page
// cache of a scan: the forms of that many messages are more than a read
// connection's cache holds, so keeping them saves the next read nothing.
const scanSpan = 50000

// wideSpan reports whether uids (with * as 0) spans scanSpan UIDs or more.
func wideSpan(uids UIDSet) bool {
	for _, r := range uids {
		lo, hi := min(r.Start, r.Stop), max(r.Start, r.Stop)
		if lo == 0 || uint64(hi)-uint64(lo) >= scanSpan-1 {
			return true
		}
	}
	return false
}

// formsQuery reads what FetchForms gives, in UID order: the UID, the
// flags, the date, the size, the body, the id, the modseq, and then the
// body's forms, the envelope's from forms and the structure's from
// structures, each only when asked for (NULL where it has none or was not
// asked for; formsFallback reads the stored values then).
func formsQuery(want Want) string {
	var b strings.Builder
	b.WriteString("SELECT m.uid, m.flags, m.keywords, m.date, m.size")
	switch {
	case want&WantListing != 0 && want&(WantEnvelopeWire|WantStructureWire) != 0:
		// The index, which holds the body (schema 17), and a forms or
		// structures row by its rowid (schema 19), not a messages row
		// besides.
		b.WriteString(", m.body, 0, 0")
		if want&WantEnvelopeWire != 0 {
			b.WriteString(", f.envelope")
		} else {
			b.WriteString(", NULL")
		}
		if want&WantStructureWire != 0 {
			b.WriteString(", st.structure")
		} else {
			b.WriteString(", NULL")
		}
		b.WriteString(" FROM messages m INDEXED BY messages_listing")
		if want&WantEnvelopeWire != 0 {
			b.WriteString(" LEFT JOIN forms f ON f.bid = m.body")
		}
		if want&WantStructureWire != 0 {
			b.WriteString(" LEFT JOIN structures st ON st.bid = m.body")
		}
	case want&WantListing != 0:
		b.WriteString(" FROM messages m")
	case want&(WantEnvelopeWire|WantStructureWire) == WantEnvelopeWire|WantStructureWire:
		b.WriteString(", m.body, m.id, m.modseq, f.envelope, st.structure FROM messages m LEFT JOIN forms f ON f.bid = m.body" +
			" LEFT JOIN structures st ON st.bid = m.body")
	case want&WantEnvelopeWire != 0:
		b.WriteString(", m.body, m.id, m.modseq, f.envelope, NULL FROM messages m LEFT JOIN forms f ON f.bid = m.body")
	case want&WantStructureWire != 0:
		b.WriteString(", m.body, m.id, m.modseq, NULL, st.structure FROM messages m LEFT JOIN structures st ON st.bid = m.body")
	default:
		b.WriteString(", m.body, m.id, m.modseq FROM messages m")
	}
	b.WriteString(" WHERE m.mailbox = (SELECT mid FROM mailboxes WHERE id = ?1) AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid")
	return b.String()
}

// formsFallback reads the stored envelope and structure of a body that
// lacks a form FetchForms was asked for.
const formsFallback = "SELECT envelope, structure FROM bodies WHERE bid = ?"

// systemFlagLists holds, for every set of system flag bits, its flags in
// output order; the lists are shared and never written.
var systemFlagLists = func() (out [32][]string) {
	for bits := range out {
		out[bits] = flagSet{bits: uint8(bits)}.list()
	}
	return out
}()

func (s *Store) fetchForms(c *sqlite3.Conn, mailbox command.ID, uv uint32, uids UIDSet, want Want, fn func(*Message) error) error {
	wrap := func(err error) error { return fmt.Errorf("reading mailbox %s: %w", mailbox, err) }
	st, _, err := c.Prepare("SELECT mid, (SELECT coalesce(max(uid), 0) FROM messages WHERE mailbox = mid), " + validityOf + " FROM mailboxes WHERE id = ?1")
	if err != nil {
		return wrap(err)
	}
	if err := st.BindBlob(1, mailbox[:]); err != nil {
		st.Close()
		return wrap(err)
	}
	if !st.Step() {
		err := st.Err()
		st.Close()
		if err != nil {
			return wrap(err)
		}
		return wrap(ErrNoMailbox)
	}
	last, now := UID(st.ColumnInt64(1)), uint32(st.ColumnInt64(2))
	if err := st.Close(); err != nil {
		return wrap(err)
	}
	if uv != 0 && now != uv {
		return wrap(fmt.Errorf("UIDVALIDITY %d, not %d: %w", now, uv, ErrUIDValidity))
	}
	lo, hi, in := uidRanges(uids, last)
	rows, _, err := c.Prepare(formsQuery(want))
	if err != nil {
		return wrap(err)
	}
	defer rows.Close()
	if err := errors.Join(rows.BindBlob(1, mailbox[:]), rows.BindInt64(2, int64(lo)), rows.BindInt64(3, int64(hi))); err != nil {
		return wrap(err)
	}
	forms := want&(WantEnvelopeWire|WantStructureWire) != 0
	listing := want&WantListing != 0
	var fallback *sqlite3.Stmt
	var m Message
	mb := mailbox
	for rows.Step() {
		uid := UID(rows.ColumnInt64(0))
		if !in(uid) {
			continue
		}
		m = Message{Mailbox: mb, UID: uid, InternalDate: time.UnixMilli(rows.ColumnInt64(3)), Size: rows.ColumnInt64(4)}
		if forms {
			m.bodyID = rows.ColumnInt64(5)
		}
		if !listing {
			m.ModSeq, m.bodyID, m.loader = uint64(rows.ColumnInt64(7)), rows.ColumnInt64(5), s.rdb
			copy(m.ID[:], rows.ColumnRawBlob(6))
		}
		bits := uint8(rows.ColumnInt64(1))
		if kw := rows.ColumnRawText(2); len(kw) > 0 {
			m.Flags = flagSet{bits: bits, keywords: decodeKeywords(string(kw))}.list()
		} else {
			m.Flags = systemFlagLists[bits&31]
			if bits > 31 {
				m.Flags = flagSet{bits: bits}.list()
			}
		}
		if forms {
			if (want&WantEnvelopeWire == 0 || rows.ColumnType(8) != sqlite3.NULL) && (want&WantStructureWire == 0 || rows.ColumnType(9) != sqlite3.NULL) {
				m.EnvelopeWire, m.StructureWire = rawForm(rows, 8, want&WantEnvelopeWire), rawForm(rows, 9, want&WantStructureWire)
			} else {
				// A form asked for is missing: both stored values
				// instead.
				if fallback == nil {
					if fallback, _, err = c.Prepare(formsFallback); err != nil {
						return wrap(err)
					}
					defer fallback.Close()
				}
				if err := fallback.BindInt64(1, m.bodyID); err != nil {
					return wrap(err)
				}
				if !fallback.Step() {
					err := fallback.Err()
					if err == nil {
						err = fmt.Errorf("message %d: body %d missing", uid, m.bodyID)
					}
					return wrap(err)
				}
				// Copied: the statement is reset before fn.
				if want&WantEnvelopeWire != 0 {
					m.Envelope = bytes.Clone(fallback.ColumnRawBlob(0))
				}
				if want&WantStructureWire != 0 {
					m.BodyStructure = bytes.Clone(fallback.ColumnRawBlob(1))
				}
				if err := fallback.Reset(); err != nil {
					return wrap(err)
				}
			}
		}
		if err := fn(&m); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return wrap(err)
	}
	return nil
}

// rawForm is column col of the row when want is set: SQLite's bytes, valid
// until the next step.
func rawForm(st *sqlite3.Stmt, col int, want Want) []byte {
	if want == 0 {
		return nil
	}
	return st.ColumnRawBlob(col)
}

// uidRanges resolves * (0) in uids to last and returns the span of the
// ranges and an exact filter.
func uidRanges(uids UIDSet, last UID) (lo, hi UID, in func(UID) bool) {
	ranges := make([][2]UID, len(uids))
	lo, hi = UID(^uint32(0)), UID(0)
	for i, r := range uids {
		start, stop := r.Start, r.Stop
		if start == 0 {
			start = last
		}
		if stop == 0 {
			stop = last
		}
		if start > stop {
			start, stop = stop, start
		}
		ranges[i] = [2]UID{start, stop}
		lo, hi = min(lo, start), max(hi, stop)
	}
	in = func(uid UID) bool {
		for _, r := range ranges {
			if uid >= r[0] && uid <= r[1] {
				return true
			}
		}
		return false
	}
	return lo, hi, in
}

// readRaw runs f in one read transaction on a read connection's SQLite
// connection itself, for reads that step rows through the driver rather
// than database/sql. f's own failure is f's to keep; the transaction ends
// whatever happened, ctx done too, or the connection is not used again.
// The driver panics where SQLite runs out of memory: that panic is the
// error returned (sqlite3.NOMEM), and the connection is closed; any other
// panic goes on.
func (s *Store) readRaw(ctx context.Context, f func(c *sqlite3.Conn)) error {
	return s.readRawWith(ctx, false, f)
}

// readRawWith is readRaw, on a connection whose page cache is held to
// scanCacheKiB meanwhile when scan is set (readScan says why): for reads
// of a whole large mailbox, whose pages the connection's cache could not
// hold for the next read anyway.
func (s *Store) readRawWith(ctx context.Context, scan bool, f func(c *sqlite3.Conn)) error {
	conn, err := s.rdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) (err error) {
		rc, ok := dc.(interface{ Raw() *sqlite3.Conn })
		if !ok {
			return fmt.Errorf("the driver's connection %T gives no SQLite connection", dc)
		}
		c := rc.Raw()
		defer func() {
			if r := recover(); r != nil {
				if !devicedb.OutOfMemory(r) {
					panic(r)
				}
				err = errors.Join(driver.ErrBadConn, sqlite3.NOMEM)
			}
		}()
		if scan {
			if err := c.Exec(fmt.Sprintf("PRAGMA cache_size = -%d", scanCacheKiB)); err != nil {
				return err
			}
		}
		if err := c.Exec("BEGIN"); err != nil {
			return err
		}
		old := c.SetInterrupt(ctx)
		f(c)
		c.SetInterrupt(old)
		if err := c.Exec("ROLLBACK"); err != nil {
			return errors.Join(driver.ErrBadConn, err)
		}
		if scan {
			if err := c.Exec(fmt.Sprintf("PRAGMA cache_size = -%d", readCacheKiB)); err != nil {
				// Not to leave a reader with the small cache: the pool
				// opens a new one with the data source name's.
				return errors.Join(driver.ErrBadConn, err)
			}
		}
		return nil
	})
}
