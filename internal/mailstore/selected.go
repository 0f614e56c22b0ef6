package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"cspool/internal/command"
)

// Selected is a mailbox as an IMAP session selected it: its id and the
// UIDVALIDITY the session was shown. Its reads are the Store's, each of
// which checks, in the read transaction it reads the messages in, that
// the mailbox still has that UIDVALIDITY: where it has another (deleted
// and created again on this device, docs/MAILSTORE.md "Changes made on
// this device"), or is gone, the read reads no message and fails with
// ErrUIDValidity or ErrNoMailbox. So the UIDs a session was shown never
// name the messages of the mailbox made again, whose UIDs they may be
// too, between the commit that made it and the session hearing of it.
type Selected struct {
	s  *Store
	id command.ID
	uv uint32
}

// Selected returns mailbox id as selected with UIDVALIDITY uidValidity,
// which is not 0.
func (s *Store) Selected(id command.ID, uidValidity uint32) *Selected {
	return &Selected{s: s, id: id, uv: uidValidity}
}

// ID returns the mailbox's id.
func (x *Selected) ID() command.ID { return x.id }

// UIDValidity returns the UIDVALIDITY it was selected with.
func (x *Selected) UIDValidity() uint32 { return x.uv }

// Fetch is Store.Fetch, checked.
func (x *Selected) Fetch(ctx context.Context, uids UIDSet, want Want, fn func(*Message) error) error {
	return x.s.fetch(ctx, x.id, x.uv, uids, want, fn)
}

// FetchForms is Store.FetchForms, checked.
func (x *Selected) FetchForms(ctx context.Context, uids UIDSet, want Want, fn func(*Message) error) error {
	return x.s.fetchFormsIn(ctx, x.id, x.uv, uids, want, fn)
}

// Scan is Store.Scan, checked.
func (x *Selected) Scan(ctx context.Context, want Want, fn func(*Message) error) error {
	if err := x.s.check(); err != nil {
		return err
	}
	return x.s.scan(ctx, x.id, x.uv, want, nil, fn)
}

// ScanUIDs is Store.ScanUIDs, checked.
func (x *Selected) ScanUIDs(ctx context.Context, uids []UID, want Want, fn func(*Message) error) error {
	return x.s.scanUIDs(ctx, x.id, x.uv, uids, want, fn)
}

// TextSearch is Store.TextSearch, checked.
func (x *Selected) TextSearch(ctx context.Context, key SearchKey, needle string) (*TextAnswer, error) {
	return x.s.textSearch(ctx, x.id, x.uv, key, needle)
}

// MessageIDs is Store.MessageIDs, checked: the ids are those the UIDs
// named under the UIDVALIDITY selected.
func (x *Selected) MessageIDs(ctx context.Context, uids []UID) (map[UID]command.ID, error) {
	return x.s.messageIDs(ctx, x.id, x.uv, uids)
}

// validityOf is a mailbox's UIDVALIDITY as shown (this device's first),
// as a column of a query of the mailboxes table.
const validityOf = "coalesce((SELECT o.uidvalidity FROM uidvalidity_override o WHERE o.mailbox = mailboxes.id), mailboxes.uidvalidity)"

// checkValidity fails with ErrUIDValidity when mailbox's UIDVALIDITY is
// not uv, and with ErrNoMailbox when there is no such mailbox, in the
// transaction q; uv 0 checks nothing.
func checkValidity(ctx context.Context, q queryer, mailbox command.ID, uv uint32) error {
	if uv == 0 {
		return nil
	}
	var now int64
	err := q.QueryRowContext(ctx, "SELECT "+validityOf+" FROM mailboxes WHERE id = ?", mailbox[:]).Scan(&now)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("reading mailbox %s: %w", mailbox, ErrNoMailbox)
	case err != nil:
		return fmt.Errorf("reading mailbox %s: %w", mailbox, err)
	case uint32(now) != uv:
		return fmt.Errorf("reading mailbox %s: UIDVALIDITY %d, not %d: %w", mailbox, now, uv, ErrUIDValidity)
	}
	return nil
}
