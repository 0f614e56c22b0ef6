package mailstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"

	"cspool/internal/command"
)

// State is the whole replicated state of a store: everything Apply
// determines, and nothing else (no rejection times, no storage ids). Two
// devices that applied the same log have equal States.
type State struct {
	Position        uint64
	NextUIDValidity uint32
	Mailboxes       []MailboxState // sorted by ID
	Subscriptions   []string       // sorted
	Keywords        []string       // spellings, sorted case-insensitively
	Messages        []MessageState // sorted by ID
	Entries         int            // entry ids seen (applied or rejected)
	EntriesDigest   [32]byte       // SHA-256 over the seen ids in id order, with their positions
}

// MailboxState is one mailbox in a State.
type MailboxState struct {
	ID            command.ID
	Name          string
	SpecialUse    string
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
}

// MessageState is one message in a State.
type MessageState struct {
	ID           command.ID
	Mailbox      command.ID
	UID          uint32
	Flags        []string
	InternalDate int64 // Unix ms
	Size         int64
	ModSeq       uint64
	Digest       [32]byte // SHA-256 of the raw bytes
}

// Dump reads the whole state from one snapshot.
func (s *Store) Dump(ctx context.Context) (*State, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("dumping state: %w", err)
	}
	defer tx.Rollback()
	st := &State{}
	var pos, uv int64
	if err := tx.QueryRowContext(ctx, "SELECT position, next_uidvalidity FROM state").Scan(&pos, &uv); err != nil {
		return nil, fmt.Errorf("dumping state: %w", err)
	}
	st.Position, st.NextUIDValidity = uint64(pos), uint32(uv)
	if err := dumpRows(ctx, tx, "SELECT id, name, special_use, uidvalidity, uidnext, highest_modseq FROM mailboxes ORDER BY id",
		func(r scanner) error {
			var m MailboxState
			var id []byte
			if err := r.Scan(&id, &m.Name, &m.SpecialUse, &m.UIDValidity, &m.UIDNext, &m.HighestModSeq); err != nil {
				return err
			}
			copy(m.ID[:], id)
			st.Mailboxes = append(st.Mailboxes, m)
			return nil
		}); err != nil {
		return nil, err
	}
	if st.Subscriptions, err = queryColumn[string](ctx, tx, "SELECT name FROM subscriptions ORDER BY name"); err != nil {
		return nil, err
	}
	if st.Keywords, err = queryColumn[string](ctx, tx, "SELECT name FROM keywords ORDER BY fold"); err != nil {
		return nil, err
	}
	if err := dumpRows(ctx, tx, `SELECT m.id, mb.id, m.uid, m.flags, m.keywords, m.date, m.size, m.modseq, b.digest
		FROM messages m JOIN mailboxes mb ON mb.mid = m.mailbox JOIN bodies b ON b.bid = m.body ORDER BY m.id`,
		func(r scanner) error {
			var m MessageState
			var id, mbid, digest []byte
			var f flagSet
			var kw string
			if err := r.Scan(&id, &mbid, &m.UID, &f.bits, &kw, &m.InternalDate, &m.Size, &m.ModSeq, &digest); err != nil {
				return err
			}
			copy(m.ID[:], id)
			copy(m.Mailbox[:], mbid)
			copy(m.Digest[:], digest)
			f.keywords = decodeKeywords(kw)
			m.Flags = f.list()
			st.Messages = append(st.Messages, m)
			return nil
		}); err != nil {
		return nil, err
	}
	h := sha256.New()
	if err := dumpRows(ctx, tx, "SELECT id, pos, old FROM entries ORDER BY id", func(r scanner) error {
		var id []byte
		var pos, old int64
		if err := r.Scan(&id, &pos, &old); err != nil {
			return err
		}
		if old != 0 {
			fmt.Fprintf(h, "%x %d superseded\n", id, pos)
		} else {
			fmt.Fprintf(h, "%x %d\n", id, pos)
		}
		st.Entries++
		return nil
	}); err != nil {
		return nil, err
	}
	copy(st.EntriesDigest[:], h.Sum(nil))
	return st, nil
}

func dumpRows(ctx context.Context, q queryer, query string, fn func(scanner) error) error {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return fmt.Errorf("dumping state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return fmt.Errorf("dumping state: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dumping state: %w", err)
	}
	return nil
}

// Checksum is the SHA-256 of the State's JSON encoding: equal states have
// equal checksums.
func (st *State) Checksum() [32]byte {
	b, err := json.Marshal(st)
	if err != nil {
		panic(fmt.Sprintf("mailstore: encoding a State cannot fail: %v", err))
	}
	return sha256.Sum256(b)
}

// Diff lists the differences between two states, field by field, at most
// max of them (all if max <= 0); nil means equal.
func Diff(a, b *State, limit int) []string {
	var out []string
	add := func(format string, args ...any) {
		if limit <= 0 || len(out) < limit {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	if a.Position != b.Position {
		add("position: %d != %d", a.Position, b.Position)
	}
	if a.NextUIDValidity != b.NextUIDValidity {
		add("next uidvalidity: %d != %d", a.NextUIDValidity, b.NextUIDValidity)
	}
	if !reflect.DeepEqual(a.Subscriptions, b.Subscriptions) {
		add("subscriptions: %q != %q", a.Subscriptions, b.Subscriptions)
	}
	if !reflect.DeepEqual(a.Keywords, b.Keywords) {
		add("keywords: %q != %q", a.Keywords, b.Keywords)
	}
	if a.Entries != b.Entries || a.EntriesDigest != b.EntriesDigest {
		add("entries seen: %d (%x) != %d (%x)", a.Entries, a.EntriesDigest[:4], b.Entries, b.EntriesDigest[:4])
	}
	ma := map[command.ID]MailboxState{}
	for _, m := range a.Mailboxes {
		ma[m.ID] = m
	}
	for _, m := range b.Mailboxes {
		if x, ok := ma[m.ID]; !ok {
			add("mailbox %s %q only in second", m.ID, m.Name)
		} else if x != m {
			add("mailbox %s: %+v != %+v", m.ID, x, m)
		}
		delete(ma, m.ID)
	}
	for _, m := range a.Mailboxes {
		if _, ok := ma[m.ID]; ok {
			add("mailbox %s %q only in first", m.ID, m.Name)
		}
	}
	mm := map[command.ID]MessageState{}
	for _, m := range a.Messages {
		mm[m.ID] = m
	}
	for _, m := range b.Messages {
		if x, ok := mm[m.ID]; !ok {
			add("message %s only in second", m.ID)
		} else if !reflect.DeepEqual(x, m) {
			add("message %s: %+v != %+v", m.ID, x, m)
		}
		delete(mm, m.ID)
	}
	for _, m := range a.Messages {
		if _, ok := mm[m.ID]; ok {
			add("message %s only in first", m.ID)
		}
	}
	return out
}
