package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
)

// Want says which of a message's stored parts to load besides its metadata
// (id, UID, flags, internal date, size, modseq), which always come.
type Want uint8

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
	// gets the decoded values for both, and no form.
	WantStructureWire
	// WantMetadataOnly: the metadata alone, read from the messages table
	// without the bodies': HeaderLen and Parse are left zero. Not with
	// the bits above.
	WantMetadataOnly
)

// Message is one message as FETCH and SEARCH need it.
type Message struct {
	ID           command.ID
	Mailbox      command.ID
	UID          imap.UID
	Flags        []string // system flags first, then keywords as first spelled
	InternalDate time.Time
	Size         int64 // RFC822.SIZE: the raw bytes' length
	ModSeq       uint64
	HeaderLen    int64 // the header's length, blank line included: Raw[:HeaderLen]
	Parse        ParseStatus

	Envelope      *imap.Envelope     // with WantEnvelope
	EnvelopeWire  []byte             // with WantEnvelopeWire: as a FETCH response writes it; nil: see Envelope
	StructureWire []byte             // with WantStructureWire: as BODYSTRUCTURE; nil: see BodyStructure
	BodyStructure imap.BodyStructure // with WantStructure (extended data)
	Header        []byte             // with WantHeader
	Raw           []byte             // with WantRaw

	bodyID int64
	loader queryer
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
	var data []byte
	if err := m.loader.QueryRowContext(ctx, "SELECT data FROM blobs WHERE bid = ?", m.bodyID).Scan(&data); err != nil {
		return nil, fmt.Errorf("loading message %s: %w", m.ID, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

func fetchQuery(want Want) string {
	if want&WantMetadataOnly != 0 {
		return "SELECT " + messageColumns + ", m.body, 0, 0" + messageFrom
	}
	var b strings.Builder
	b.WriteString("SELECT " + messageColumns + ", b.bid, b.header_len, b.parsed")
	if want&WantEnvelope != 0 {
		b.WriteString(", b.envelope")
	}
	if want&WantStructure != 0 {
		b.WriteString(", b.structure")
	}
	if want&WantHeader != 0 {
		b.WriteString(", (SELECT substr(data, 1, b.header_len) FROM blobs WHERE bid = b.bid)")
	}
	if want&WantRaw != 0 {
		b.WriteString(", (SELECT data FROM blobs WHERE bid = b.bid)")
	}
	// The stored forms of the envelope and the structure come only where
	// a form asked for is missing.
	var missing []string
	if want&WantEnvelopeWire != 0 {
		missing = append(missing, "b.envelope_wire IS NULL")
	}
	if want&WantStructureWire != 0 {
		missing = append(missing, "b.structure_wire IS NULL")
	}
	cond := strings.Join(missing, " OR ")
	if want&WantEnvelopeWire != 0 {
		b.WriteString(", b.envelope_wire, iif(" + cond + ", b.envelope, NULL)")
	}
	if want&WantStructureWire != 0 {
		b.WriteString(", b.structure_wire, iif(" + cond + ", b.structure, NULL)")
	}
	b.WriteString(messageFrom + "JOIN bodies b ON b.bid = m.body ")
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
		UID: imap.UID(row.uid), InternalDate: time.UnixMilli(row.date), Size: row.size,
		ModSeq: uint64(row.modSeq), HeaderLen: headerLen, Parse: ParseStatus(parsed), bodyID: bid,
	}
	copy(m.ID[:], id)
	copy(m.Mailbox[:], mbid)
	row.flags.keywords = decodeKeywords(kw)
	m.Flags = row.flags.list()
	var err error
	if want&WantEnvelope != 0 {
		if m.Envelope, err = decodeEnvelope(env); err != nil {
			return nil, err
		}
	}
	if want&WantStructure != 0 {
		if m.BodyStructure, err = decodeStructure(bs); err != nil {
			return nil, err
		}
	}
	// Where a form asked for is missing, none is given: the decoded
	// values stand in for all of them, so the message is written one way.
	if (want&WantEnvelopeWire != 0 && wire == nil) || (want&WantStructureWire != 0 && swire == nil) {
		if want&WantEnvelopeWire != 0 && m.Envelope == nil {
			if m.Envelope, err = decodeEnvelope(wireEnv); err != nil {
				return nil, err
			}
		}
		if want&WantStructureWire != 0 && m.BodyStructure == nil {
			if m.BodyStructure, err = decodeStructure(wireBS); err != nil {
				return nil, err
			}
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

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Message returns the message with uid in mailbox.
func (s *Store) Message(ctx context.Context, mailbox command.ID, uid imap.UID, want Want) (*Message, error) {
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
func (s *Store) Fetch(ctx context.Context, mailbox command.ID, uids imap.UIDSet, want Want, fn func(*Message) error) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(uids) == 0 {
		return nil
	}
	return s.scan(ctx, mailbox, want, func(last imap.UID) (string, []any, func(imap.UID) bool) {
		ranges := make([][2]imap.UID, len(uids))
		lo, hi := imap.UID(^uint32(0)), imap.UID(0)
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
			ranges[i] = [2]imap.UID{start, stop}
			lo, hi = min(lo, start), max(hi, stop)
		}
		in := func(uid imap.UID) bool {
			for _, r := range ranges {
				if uid >= r[0] && uid <= r[1] {
					return true
				}
			}
			return false
		}
		return "AND m.uid BETWEEN ? AND ?", []any{int64(lo), int64(hi)}, in
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
	return s.scan(ctx, mailbox, want, nil, fn)
}

// selector turns the mailbox's largest UID (0 if empty) into a condition on
// m.uid, its arguments and an exact filter.
type selector func(last imap.UID) (cond string, args []any, in func(imap.UID) bool)

func (s *Store) scan(ctx context.Context, mailbox command.ID, want Want, sel selector, fn func(*Message) error) error {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
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
	cond, args, in := "", []any{mb.mid}, func(imap.UID) bool { return true }
	if sel != nil {
		var last int64
		if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(uid), 0) FROM messages WHERE mailbox = ?", mb.mid).Scan(&last); err != nil {
			return fmt.Errorf("reading messages of %q: %w", mb.name, err)
		}
		var more []any
		cond, more, in = sel(imap.UID(last))
		args = append(args, more...)
	}
	rows, err := tx.QueryContext(ctx, fetchQuery(want)+"WHERE m.mailbox = ? "+cond+" ORDER BY m.uid", args...)
	if err != nil {
		return fmt.Errorf("reading messages of %q: %w", mb.name, err)
	}
	defer rows.Close()
	var targets fetchTargets
	for rows.Next() {
		m, err := scanFetched(rows, want, &targets)
		if err != nil {
			return fmt.Errorf("reading messages of %q: %w", mb.name, err)
		}
		if !in(m.UID) {
			continue
		}
		m.loader = tx
		err = fn(m)
		m.loader = s.rdb // later calls read the current state
		if err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading messages of %q: %w", mb.name, err)
	}
	return nil
}
