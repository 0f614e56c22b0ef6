package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/command"
)

// Mailbox is a mailbox with the figures STATUS and LIST-STATUS need.
type Mailbox struct {
	ID            command.ID
	Name          string
	SpecialUse    string // RFC 6154 attribute or ""
	Subscribed    bool
	UIDValidity   uint32
	UIDNext       UID
	HighestModSeq uint64 // log position of the last change to the mailbox
	Messages      uint32
	Unseen        uint32
	Size          int64 // sum of RFC822.SIZE (STATUS SIZE, RFC 8438)
}

// The UIDVALIDITY is the one this device gave the mailbox, if any
// (queue.go), else the log's.
const mailboxStatusQuery = `SELECT mb.mid, mb.id, mb.name, mb.special_use,
	coalesce((SELECT o.uidvalidity FROM uidvalidity_override o WHERE o.mailbox = mb.id), mb.uidvalidity), mb.uidnext, mb.highest_modseq,
	EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = mb.name),
	count(m.rid), coalesce(sum(m.flags & 1 = 0), 0), coalesce(sum(m.size), 0)
FROM mailboxes mb LEFT JOIN messages m ON m.mailbox = mb.mid `

func scanMailboxStatus(r scanner) (*Mailbox, error) {
	var mb Mailbox
	var mid, uv, next, modseq int64
	var id []byte
	if err := r.Scan(&mid, &id, &mb.Name, &mb.SpecialUse, &uv, &next, &modseq,
		&mb.Subscribed, &mb.Messages, &mb.Unseen, &mb.Size); err != nil {
		return nil, err
	}
	copy(mb.ID[:], id)
	mb.UIDValidity, mb.UIDNext, mb.HighestModSeq = uint32(uv), UID(next), uint64(modseq)
	return &mb, nil
}

// Mailboxes lists every mailbox, sorted by name.
func (s *Store) Mailboxes(ctx context.Context) ([]Mailbox, error) {
	return s.mailboxes(ctx, mailboxStatusQuery+"GROUP BY mb.mid ORDER BY mb.name")
}

// mailboxIdentitiesQuery is mailboxStatusQuery without the counts, which
// read every message of every mailbox.
const mailboxIdentitiesQuery = `SELECT mb.mid, mb.id, mb.name, mb.special_use,
	coalesce((SELECT o.uidvalidity FROM uidvalidity_override o WHERE o.mailbox = mb.id), mb.uidvalidity), mb.uidnext, mb.highest_modseq,
	EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = mb.name), 0, 0, 0
FROM mailboxes mb ORDER BY mb.name`

// MailboxIdentities lists every mailbox as Mailboxes does but without the
// counts (Messages, Unseen and Size are zero), as MailboxIdentity gives
// one: read without going through the messages (a million of them took a
// quarter of a second and filled a read connection's page cache).
func (s *Store) MailboxIdentities(ctx context.Context) ([]Mailbox, error) {
	return s.mailboxes(ctx, mailboxIdentitiesQuery)
}

func (s *Store) mailboxes(ctx context.Context, query string) ([]Mailbox, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("listing mailboxes: %w", err)
	}
	defer rows.Close()
	var out []Mailbox
	for rows.Next() {
		mb, err := scanMailboxStatus(rows)
		if err != nil {
			return nil, fmt.Errorf("listing mailboxes: %w", err)
		}
		out = append(out, *mb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing mailboxes: %w", err)
	}
	return out, nil
}

func (s *Store) mailboxStatus(ctx context.Context, where string, arg any, what string) (*Mailbox, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	mb, err := scanMailboxStatus(s.rdb.QueryRowContext(ctx, mailboxStatusQuery+"WHERE "+where+" GROUP BY mb.mid", arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("mailbox %s: %w", what, ErrNoMailbox)
	}
	if err != nil {
		return nil, fmt.Errorf("reading mailbox %s: %w", what, err)
	}
	return mb, nil
}

// MailboxByName returns the mailbox called name (INBOX in any case).
func (s *Store) MailboxByName(ctx context.Context, name string) (*Mailbox, error) {
	return s.mailboxStatus(ctx, "mb.name = ?", NormalizeName(name), fmt.Sprintf("%q", name))
}

// MailboxIdentity returns the mailbox called name as MailboxByName does
// but without the counts (Messages, Unseen and Size are zero): what a
// SELECT needs, read without going through the mailbox's messages.
func (s *Store) MailboxIdentity(ctx context.Context, name string) (*Mailbox, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var mb Mailbox
	var uv, next, modseq int64
	var id []byte
	err := s.rdb.QueryRowContext(ctx, `SELECT mb.id, mb.name, mb.special_use,
	coalesce((SELECT o.uidvalidity FROM uidvalidity_override o WHERE o.mailbox = mb.id), mb.uidvalidity), mb.uidnext, mb.highest_modseq,
	EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = mb.name)
FROM mailboxes mb WHERE mb.name = ?`, NormalizeName(name)).Scan(&id, &mb.Name, &mb.SpecialUse, &uv, &next, &modseq, &mb.Subscribed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("mailbox %q: %w", name, ErrNoMailbox)
	}
	if err != nil {
		return nil, fmt.Errorf("reading mailbox %q: %w", name, err)
	}
	copy(mb.ID[:], id)
	mb.UIDValidity, mb.UIDNext, mb.HighestModSeq = uint32(uv), UID(next), uint64(modseq)
	return &mb, nil
}

// MailboxByID returns the mailbox with id.
func (s *Store) MailboxByID(ctx context.Context, id command.ID) (*Mailbox, error) {
	return s.mailboxStatus(ctx, "mb.id = ?", id[:], id.String())
}

// Subscriptions lists the subscribed names, sorted; a name may have no
// mailbox (RFC 9051 section 6.3.7).
func (s *Store) Subscriptions(ctx context.Context) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return queryColumn[string](ctx, s.rdb, "SELECT name FROM subscriptions ORDER BY name")
}

// queryColumn runs a query of one column and returns its values in order.
func queryColumn[T any](ctx context.Context, q queryer, query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("querying: %w", err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("querying: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querying: %w", err)
	}
	return out, nil
}

// Keywords lists the keywords ever used, as first spelled, sorted
// case-insensitively (for the FLAGS and PERMANENTFLAGS responses).
func (s *Store) Keywords(ctx context.Context) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return queryColumn[string](ctx, s.rdb, "SELECT name FROM keywords ORDER BY fold")
}

// mailboxKeywordsQuery reads the distinct keyword lists in use in a
// mailbox from the partial index messages_keywords (schema version 15):
// the messages without keywords, nearly all of them, are not read. It
// steps from one list to the next greater one with a seek in the index
// (a loose index scan), so it reads one index entry for each distinct
// list, not one for each message that has keywords: a mail client that
// marks every message $NotJunk made SELECT DISTINCT read them all, at
// every SELECT and at every STORE of a keyword (the mailbox's bound,
// imapd's keywordsLimit). SQLite skips ahead so by itself only with
// ANALYZE's statistics, which these databases do not keep.
const mailboxKeywordsQuery = `WITH RECURSIVE b(mid) AS (SELECT mid FROM mailboxes WHERE id = ?),
k(kw) AS (
	SELECT (SELECT min(m.keywords) FROM messages m INDEXED BY messages_keywords
		WHERE m.mailbox = (SELECT mid FROM b) AND m.keywords != '')
	UNION ALL
	SELECT (SELECT min(m.keywords) FROM messages m INDEXED BY messages_keywords
		WHERE m.mailbox = (SELECT mid FROM b) AND m.keywords != '' AND m.keywords > k.kw)
	FROM k WHERE k.kw IS NOT NULL)
SELECT kw FROM k WHERE kw IS NOT NULL`

// MailboxKeywords lists the keywords set on at least one message of a
// mailbox, as spelled in the store, sorted case-insensitively: the keywords
// of the mailbox's FLAGS (RFC 9051 section 7.3.5).
func (s *Store) MailboxKeywords(ctx context.Context, mailbox command.ID) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	sets, err := queryColumn[string](ctx, s.rdb, mailboxKeywordsQuery, mailbox[:])
	if err != nil {
		return nil, fmt.Errorf("listing the keywords of %s: %w", mailbox, err)
	}
	var f flagSet
	for _, kw := range sets {
		f = f.union(flagSet{keywords: decodeKeywords(kw)})
	}
	return f.keywords, nil
}

// UIDs returns the UIDs of a mailbox's messages in increasing order: the
// message sequence numbers are the positions in this list (RFC 9051 section
// 2.3.1.2).
func (s *Store) UIDs(ctx context.Context, mailbox command.ID) ([]UID, error) {
	uids, _, err := s.UIDsAt(ctx, mailbox)
	return uids, err
}

// UIDsAt is UIDs with the log position the list reflects (Position), both
// read in one snapshot.
func (s *Store) UIDsAt(ctx context.Context, mailbox command.ID) ([]UID, uint64, error) {
	l, pos, err := s.listingAt(ctx, mailbox, false)
	if err != nil {
		return nil, 0, err
	}
	return l.UIDs, pos, nil
}

// Listing is a mailbox's messages as a FETCH of UID, FLAGS, INTERNALDATE
// and RFC822.SIZE needs them, in parallel slices in UID order: message i
// has UID UIDs[i], the flags Lists[Flags[i]] (system flags first, then
// keywords, as Message.Flags; one list shared by every message with those
// flags, never to be written), the size Sizes[i] (UnlistedSize for a
// message of 4 GiB or more) and the internal date Dates[i] in Unix
// milliseconds. UIDNext and UIDValidity are the mailbox's in the same
// snapshot.
type Listing struct {
	UIDs        []UID
	Flags       []uint32
	Lists       [][]string
	Sizes       []uint32
	Dates       []int64
	UIDNext     UID
	UIDValidity uint32
}

// UnlistedSize in Listing.Sizes: the size does not fit; read it from the
// message.
const UnlistedSize = ^uint32(0)

func listedSize(n int64) uint32 {
	if n < 0 || n >= int64(UnlistedSize) {
		return UnlistedSize
	}
	return uint32(n)
}

// ListingAt is UIDsAt with each message's flags, size and date: the
// listing of the mailbox and the log position it reflects, of one
// snapshot, read from the index messages_listing alone.
func (s *Store) ListingAt(ctx context.Context, mailbox command.ID) (*Listing, uint64, error) {
	return s.listingAt(ctx, mailbox, true)
}

func (s *Store) listingAt(ctx context.Context, mailbox command.ID, full bool) (*Listing, uint64, error) {
	if err := s.check(); err != nil {
		return nil, 0, err
	}
	var out *Listing
	var pos uint64
	var qErr error
	// The rows are read through the SQLite driver itself, a step and an
	// integer each (database/sql's Next and Scan cost several times the
	// query over a large mailbox); the position, the mailbox and its rows
	// are of one snapshot.
	// Through the small page cache of a scan: it reads every entry of
	// the mailbox's part of an index once.
	err := s.readRawWith(ctx, true, func(c *sqlite3.Conn) {
		out, pos, qErr = mailboxListing(c, mailbox, full)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listing uids: %w", err)
	}
	if qErr != nil {
		return nil, 0, fmt.Errorf("listing uids of %s: %w", mailbox, qErr)
	}
	return out, pos, nil
}

// mailboxListing reads the store's position and the UIDs of mailbox in
// increasing order, with their flags, sizes and dates when full, inside a
// read transaction.
func mailboxListing(c *sqlite3.Conn, mailbox command.ID, full bool) (*Listing, uint64, error) {
	st, _, err := c.Prepare(`SELECT (SELECT position FROM state), (SELECT mid FROM mailboxes WHERE id = ?1), (SELECT uidnext FROM mailboxes WHERE id = ?1),
	coalesce((SELECT uidvalidity FROM uidvalidity_override WHERE mailbox = ?1), (SELECT uidvalidity FROM mailboxes WHERE id = ?1))`)
	if err != nil {
		return nil, 0, err
	}
	if err := st.BindBlob(1, mailbox[:]); err != nil {
		st.Close()
		return nil, 0, err
	}
	if !st.Step() {
		err := errors.Join(st.Err(), errors.New("no state row"))
		st.Close()
		return nil, 0, err
	}
	pos, none, mid, next, uv := uint64(st.ColumnInt64(0)), st.ColumnType(1) == sqlite3.NULL, st.ColumnInt64(1), UID(st.ColumnInt64(2)), uint32(st.ColumnInt64(3))
	if err := st.Close(); err != nil {
		return nil, 0, err
	}
	if none {
		return nil, 0, ErrNoMailbox
	}
	// The slices are made at their size, from a count in the same
	// snapshot: grown by append, a million messages' would take about as
	// much again while they grow (the old arrays with the new).
	count, _, err := c.Prepare("SELECT count(*) FROM messages WHERE mailbox = ?")
	if err != nil {
		return nil, 0, err
	}
	if err := count.BindInt64(1, mid); err != nil {
		count.Close()
		return nil, 0, err
	}
	if !count.Step() {
		err := errors.Join(count.Err(), errors.New("no count"))
		count.Close()
		return nil, 0, err
	}
	n := int(count.ColumnInt64(0))
	if err := count.Close(); err != nil {
		return nil, 0, err
	}
	q := "SELECT uid FROM messages WHERE mailbox = ? ORDER BY uid"
	if full {
		q = "SELECT uid, flags, keywords, size, date FROM messages INDEXED BY messages_listing WHERE mailbox = ? ORDER BY uid"
	}
	rows, _, err := c.Prepare(q)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	if err := rows.BindInt64(1, mid); err != nil {
		return nil, 0, err
	}
	out := &Listing{UIDs: make([]UID, 0, n), UIDNext: next, UIDValidity: uv}
	if full {
		out.Flags, out.Sizes, out.Dates = make([]uint32, 0, n), make([]uint32, 0, n), make([]int64, 0, n)
	}
	// The lists of flags seen, by their system flags and keywords as
	// stored.
	type key struct {
		bits uint8
		kw   string
	}
	lists := map[key]uint32{}
	for rows.Step() {
		out.UIDs = append(out.UIDs, UID(rows.ColumnInt64(0)))
		if !full {
			continue
		}
		k := key{bits: uint8(rows.ColumnInt64(1))}
		if kw := rows.ColumnRawText(2); len(kw) > 0 {
			k.kw = string(kw)
		}
		n, ok := lists[k]
		if !ok {
			n = uint32(len(out.Lists))
			lists[k] = n
			out.Lists = append(out.Lists, flagSet{bits: k.bits, keywords: decodeKeywords(k.kw)}.list())
		}
		out.Flags = append(out.Flags, n)
		out.Sizes = append(out.Sizes, listedSize(rows.ColumnInt64(3)))
		out.Dates = append(out.Dates, rows.ColumnInt64(4))
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	return out, pos, nil
}

// Locate returns where the message with id is: its mailbox, UID and the
// mailbox's UIDVALIDITY as shown, read together (Placement, Source left
// zero).
func (s *Store) Locate(ctx context.Context, id command.ID) (Placement, error) {
	if err := s.check(); err != nil {
		return Placement{}, err
	}
	var mb []byte
	var uid, uv int64
	err := s.rdb.QueryRowContext(ctx, "SELECT mailboxes.id, m.uid, "+validityOf+" FROM messages m JOIN mailboxes ON mailboxes.mid = m.mailbox WHERE m.id = ?", id[:]).Scan(&mb, &uid, &uv)
	if errors.Is(err, sql.ErrNoRows) {
		return Placement{}, fmt.Errorf("locating message %s: %w", id, ErrNoMessage)
	}
	if err != nil {
		return Placement{}, fmt.Errorf("locating message %s: %w", id, err)
	}
	p := Placement{ID: id, UID: UID(uid), UIDValidity: uint32(uv)}
	copy(p.Mailbox[:], mb)
	return p, nil
}

// MessageIDs maps UIDs of a mailbox to message ids, for building commands.
// UIDs with no message are left out of the map.
func (s *Store) MessageIDs(ctx context.Context, mailbox command.ID, uids []UID) (map[UID]command.ID, error) {
	return s.messageIDs(ctx, mailbox, 0, uids)
}

// messageIDs is MessageIDs, checking the mailbox's UIDVALIDITY against uv
// unless it is 0 (Selected).
func (s *Store) messageIDs(ctx context.Context, mailbox command.ID, uv uint32, uids []UID) (map[UID]command.ID, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	out := make(map[UID]command.ID, len(uids))
	if len(uids) == 0 {
		return out, nil
	}
	// Runs of consecutive UIDs make one range each.
	var set UIDSet
	for _, u := range slices.Sorted(slices.Values(uids)) {
		if n := len(set); n > 0 && u <= set[n-1].Stop+1 {
			set[n-1].Stop = u
			continue
		}
		set = append(set, UIDRange{Start: u, Stop: u})
	}
	err := s.fetch(ctx, mailbox, uv, set, 0, func(m *Message) error {
		out[m.UID] = m.ID
		return nil
	})
	return out, err
}
