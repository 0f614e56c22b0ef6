package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/fxamacker/cbor/v2"

	"cspool/internal/command"
)

// SnapshotVersion is the version of the checkpoint state encoding.
const SnapshotVersion = 1

// Snapshot is the complete replicated state at a log position: what a
// checkpoint carries. With the entries it names in Messages[].Body (the
// Deliver or Append entries holding the bytes), it rebuilds a store equal,
// field for field and UID for UID, to one that applied the whole log.
// docs/FORMAT.md section 5 specifies its CBOR encoding.
type Snapshot struct {
	Version         uint64        `cbor:"1,keyasint"`
	Position        uint64        `cbor:"2,keyasint"`
	NextUIDValidity uint32        `cbor:"3,keyasint"`
	Mailboxes       []SnapMailbox `cbor:"4,keyasint"`
	Subscriptions   []string      `cbor:"5,keyasint"`
	Keywords        []string      `cbor:"6,keyasint"`
	Messages        []SnapMessage `cbor:"7,keyasint"`
	Entries         []byte        `cbor:"8,keyasint"`           // seen entry ids: 16-byte id, 8-byte position, sorted by id, no id twice
	Chain           []byte        `cbor:"9,keyasint,omitempty"` // the log's chain hash at Position, when known
	// Superseded lists, like Entries, the entries of histories a
	// restoration replaced (restoration.go), at the positions they had
	// there: no id of Entries, positions not bounded by Position.
	Superseded []byte `cbor:"10,keyasint,omitempty"`
}

// SnapMailbox is one mailbox of a Snapshot.
type SnapMailbox struct {
	_           struct{} `cbor:",toarray"`
	ID          []byte
	Name        string
	SpecialUse  string
	UIDValidity uint32
	UIDNext     uint32
	ModSeq      uint64
}

// SnapMessage is one message of a Snapshot.
type SnapMessage struct {
	_        struct{} `cbor:",toarray"`
	ID       []byte
	Mailbox  uint32 // index into Snapshot.Mailboxes
	UID      uint32
	Flags    uint8  // system flag bits
	Keywords string // space-separated, as stored
	Date     int64
	Size     int64
	ModSeq   uint64
	Body     uint64 // position of the entry holding the bytes
	Digest   []byte // SHA-256 of the bytes
}

// Errors of checkpoints.
var (
	// ErrSnapshot: a snapshot is malformed or does not fit this store.
	ErrSnapshot = errors.New("invalid checkpoint state")
	// ErrNoOrigin: a live body has no known origin entry (stored before the
	// store tracked origins), so no checkpoint can name it.
	ErrNoOrigin = errors.New("body without an origin entry")
)

// EncodeSnapshot returns the canonical CBOR encoding of sn. An empty list
// is an empty array (an empty byte string for Entries), never null, whether
// the field is nil or empty: so DecodeSnapshot, which encodes again and
// compares, refuses null.
func EncodeSnapshot(sn *Snapshot) ([]byte, error) {
	c := *sn
	c.Mailboxes = nonNilSlice(c.Mailboxes)
	c.Subscriptions = nonNilSlice(c.Subscriptions)
	c.Keywords = nonNilSlice(c.Keywords)
	c.Messages = nonNilSlice(c.Messages)
	c.Entries = nonNilSlice(c.Entries)
	return snapCodecs.enc.Marshal(&c)
}

// nonNilSlice returns s, or an empty slice for nil.
func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// DecodeSnapshot parses and checks an encoded snapshot.
func DecodeSnapshot(b []byte) (*Snapshot, error) {
	var sn Snapshot
	if err := snapCodecs.dec.Unmarshal(b, &sn); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if sn.Version != SnapshotVersion {
		return nil, fmt.Errorf("%w: version %d", ErrSnapshot, sn.Version)
	}
	if err := sn.check(); err != nil {
		return nil, err
	}
	// Exactly one encoding: what we would write, byte for byte.
	again, err := EncodeSnapshot(&sn)
	if err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrSnapshot)
	}
	return &sn, nil
}

func (sn *Snapshot) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrSnapshot}, a...)...)
	}
	if sn.Position == 0 {
		return bad("position 0")
	}
	names := map[string]bool{}
	for i, mb := range sn.Mailboxes {
		if len(mb.ID) != command.IDSize || mb.UIDValidity == 0 || mb.UIDNext == 0 || names[mb.Name] {
			return bad("mailbox %q", mb.Name)
		}
		if i > 0 && bytes.Compare(sn.Mailboxes[i-1].ID, mb.ID) >= 0 {
			return bad("mailboxes not sorted by id, or an id twice (%x)", mb.ID)
		}
		names[mb.Name] = true
	}
	for i := 1; i < len(sn.Subscriptions); i++ {
		if sn.Subscriptions[i-1] >= sn.Subscriptions[i] {
			return bad("subscriptions not sorted, or a name twice (%q)", sn.Subscriptions[i])
		}
	}
	for i := 1; i < len(sn.Keywords); i++ {
		if foldKeyword(sn.Keywords[i-1]) >= foldKeyword(sn.Keywords[i]) {
			return bad("keywords not sorted by their lower-case form, or a keyword twice (%q)", sn.Keywords[i])
		}
	}
	if !names["INBOX"] {
		return bad("no INBOX")
	}
	// (mailbox, UID) once each: the pairs sorted, 8 bytes a message.
	at := make([]uint64, 0, len(sn.Messages))
	for i, m := range sn.Messages {
		if i > 0 && bytes.Compare(sn.Messages[i-1].ID, m.ID) >= 0 {
			return bad("messages not sorted by id, or an id twice (%x)", m.ID)
		}
		if len(m.ID) != command.IDSize || len(m.Digest) != sha256.Size || m.Body == 0 || m.Body > sn.Position ||
			int(m.Mailbox) >= len(sn.Mailboxes) || m.UID == 0 || m.UID >= sn.Mailboxes[m.Mailbox].UIDNext {
			return bad("message %x", m.ID)
		}
		at = append(at, uint64(m.Mailbox)<<32|uint64(m.UID))
	}
	slices.Sort(at)
	for i := 1; i < len(at); i++ {
		if at[i] == at[i-1] {
			return bad("two messages at UID %d of mailbox %q", uint32(at[i]), sn.Mailboxes[at[i]>>32].Name)
		}
	}
	if sn.Chain != nil && len(sn.Chain) != sha256.Size {
		return bad("chain hash of %d bytes", len(sn.Chain))
	}
	if err := checkEntryList("entries", sn.Entries, sn.Position); err != nil {
		return err
	}
	if err := checkEntryList("superseded entries", sn.Superseded, 0); err != nil {
		return err
	}
	// No id in both lists: walk them together, both sorted by id.
	a, b := sn.Entries, sn.Superseded
	for len(a) > 0 && len(b) > 0 {
		switch c := bytes.Compare(a[:16], b[:16]); {
		case c == 0:
			return bad("entry %x both applied and superseded", a[:16])
		case c < 0:
			a = a[24:]
		default:
			b = b[24:]
		}
	}
	return nil
}

// checkEntryList checks a list of 24-byte (id, position) records: sorted by
// id, each id once, positions above 0 and, when limit is not 0, at most
// limit.
func checkEntryList(what string, list []byte, limit uint64) error {
	if len(list)%24 != 0 {
		return fmt.Errorf("%w: %s field of %d bytes", ErrSnapshot, what, len(list))
	}
	var prev []byte
	for b := list; len(b) > 0; b = b[24:] {
		if p := binary.BigEndian.Uint64(b[16:24]); p == 0 || (limit != 0 && p > limit) {
			return fmt.Errorf("%w: %s: entry %x at position %d", ErrSnapshot, what, b[:16], p)
		}
		if prev != nil && bytes.Compare(prev, b[:16]) >= 0 {
			return fmt.Errorf("%w: %s not sorted by id, or an id twice (%x)", ErrSnapshot, what, b[:16])
		}
		prev = b[:16]
	}
	return nil
}

// Keep returns the positions of the entries the snapshot needs (the
// bodies of live messages), sorted and without repeats.
func (sn *Snapshot) Keep() []uint64 {
	set := map[uint64]bool{}
	for _, m := range sn.Messages {
		set[m.Body] = true
	}
	out := make([]uint64, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

type snapCodec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

// snapCodecs is immutable after initialisation.
var snapCodecs = func() snapCodec {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxArrayElements:  1 << 26,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return snapCodec{enc, dec}
}()

// Snapshot reads the whole replicated state from one read transaction. It
// returns ErrQueued while changes made on this device wait for the log:
// the state then is not the log's alone.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("taking snapshot: %w", err)
	}
	defer tx.Rollback()
	var queued int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM queue").Scan(&queued); err != nil {
		return nil, fmt.Errorf("taking snapshot: %w", err)
	}
	if queued > 0 {
		return nil, fmt.Errorf("taking snapshot: %d queued: %w", queued, ErrQueued)
	}
	return snapshotOf(ctx, tx)
}

// snapshotOf reads the whole replicated state through q, one transaction.
func snapshotOf(ctx context.Context, tx queryer) (*Snapshot, error) {
	var err error
	sn := &Snapshot{Version: SnapshotVersion, Subscriptions: []string{}, Keywords: []string{}, Messages: []SnapMessage{}}
	var pos, uv int64
	if err := tx.QueryRowContext(ctx, "SELECT position, next_uidvalidity FROM state").Scan(&pos, &uv); err != nil {
		return nil, fmt.Errorf("taking snapshot: %w", err)
	}
	sn.Position, sn.NextUIDValidity = uint64(pos), uint32(uv)
	index := map[int64]uint32{}
	if err := dumpRows(ctx, tx, "SELECT mid, id, name, special_use, uidvalidity, uidnext, highest_modseq FROM mailboxes ORDER BY id",
		func(r scanner) error {
			var m SnapMailbox
			var mid int64
			if err := r.Scan(&mid, &m.ID, &m.Name, &m.SpecialUse, &m.UIDValidity, &m.UIDNext, &m.ModSeq); err != nil {
				return err
			}
			index[mid] = uint32(len(sn.Mailboxes))
			sn.Mailboxes = append(sn.Mailboxes, m)
			return nil
		}); err != nil {
		return nil, err
	}
	if sn.Subscriptions, err = queryColumn[string](ctx, tx, "SELECT name FROM subscriptions ORDER BY name"); err != nil {
		return nil, err
	}
	if sn.Keywords, err = queryColumn[string](ctx, tx, "SELECT name FROM keywords ORDER BY fold"); err != nil {
		return nil, err
	}
	if err := dumpRows(ctx, tx, `SELECT m.id, m.mailbox, m.uid, m.flags, m.keywords, m.date, m.size, m.modseq, b.origin, b.digest
		FROM messages m JOIN bodies b ON b.bid = m.body ORDER BY m.id`,
		func(r scanner) error {
			var m SnapMessage
			var mid, origin int64
			if err := r.Scan(&m.ID, &mid, &m.UID, &m.Flags, &m.Keywords, &m.Date, &m.Size, &m.ModSeq, &origin, &m.Digest); err != nil {
				return err
			}
			if origin <= 0 {
				return fmt.Errorf("message %x: %w", m.ID, ErrNoOrigin)
			}
			m.Mailbox, m.Body = index[mid], uint64(origin)
			sn.Messages = append(sn.Messages, m)
			return nil
		}); err != nil {
		return nil, err
	}
	if sn.Entries, err = entryList(ctx, tx, 0); err != nil {
		return nil, err
	}
	if sn.Superseded, err = entryList(ctx, tx, 1); err != nil {
		return nil, err
	}
	var chain []byte
	err = tx.QueryRowContext(ctx, "SELECT hash FROM chain WHERE pos = ?", pos).Scan(&chain)
	switch {
	case err == nil:
		sn.Chain = chain
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("taking snapshot: %w", err)
	}
	if sn.Subscriptions == nil {
		sn.Subscriptions = []string{}
	}
	if sn.Keywords == nil {
		sn.Keywords = []string{}
	}
	return sn, nil
}

// entryList returns the entries table's rows of one kind (old: 0 applied
// here, 1 superseded) as Snapshot.Entries encodes them.
func entryList(ctx context.Context, q queryer, old int) ([]byte, error) {
	var ents bytes.Buffer
	err := dumpRows(ctx, q, fmt.Sprintf("SELECT id, pos FROM entries WHERE old = %d ORDER BY id", old), func(r scanner) error {
		var id []byte
		var p int64
		if err := r.Scan(&id, &p); err != nil {
			return err
		}
		ents.Write(id)
		return binary.Write(&ents, binary.BigEndian, uint64(p))
	})
	if err != nil {
		return nil, err
	}
	return ents.Bytes(), nil
}

// liveBodiesQuery reads the number of bodies from body_count, which
// triggers keep (schema version 18): one row, whatever the mailbox's size.
const liveBodiesQuery = "SELECT n FROM body_count"

// LiveBodies returns how many distinct bodies live messages hold: the
// number of entries a checkpoint taken now would keep.
func (s *Store) LiveBodies(ctx context.Context) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	// The sync loop asks after every batch; count(*) over bodies would
	// read the whole of an index of them each time.
	var n int
	if err := s.rdb.QueryRowContext(ctx, liveBodiesQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting bodies: %w", err)
	}
	return n, nil
}
