package mailstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"cspool/internal/command"
	"cspool/internal/devicedb"
)

// PlaceholderSubject is the Subject of the message that stands in for a
// held APPEND's message the user deleted (ShrinkHeldAppend).
const PlaceholderSubject = "(deleted before it reached the spool)"

// Placeholder returns the message that stands in for the message of
// queued APPEND id, of internal date date (Unix milliseconds), once the
// user deleted it: a header of three fields and an empty body, 160
// bytes (docs/MAILSTORE.md, "Changes made on this device").
func Placeholder(id command.ID, date int64) []byte {
	return fmt.Appendf(nil, "Date: %s\r\nMessage-ID: <deleted.%s@cspool.invalid>\r\nSubject: %s\r\n\r\n",
		time.UnixMilli(date).UTC().Format(time.RFC1123Z), id, PlaceholderSubject)
}

// ShrinkHeldAppend replaces the message of queued APPEND id by its
// Placeholder when the user has deleted it before it reached the log: a
// later queued change expunges it (an Expunge naming it, or a
// DeleteMailbox that saw it), it is no longer shown, and every queued
// change that names it is a flag change, an Expunge or a DeleteMailbox.
// A COPY or MOVE of it keeps it as it is: the message lives on in the
// copy. It reports whether it replaced it.
//
// Only the APPEND's body changes: its entry id, mailbox, date, flags and
// place in the queue stay, and so do the changes after it. The queue is
// taken back and applied again with the placeholder, in
// one transaction, so the state is that of a store that queued the
// placeholder: the message takes the same UID, shown expunged already,
// and sessions hear nothing; no UIDVALIDITY changes.
//
// Only the sender of the queue may call it, and only when no attempt to
// send the APPEND can still land in the log: the apply confirms a queued
// change the log brings at its virtual position by its id alone, taking
// its provisional apply for the log's, and a late landing of the
// original would then leave this device with the placeholder's apply
// where the log has the original's (docs/MAILSTORE.md, "Changes made on
// this device").
func (s *Store) ShrinkHeldAppend(ctx context.Context, id command.ID) (*Result, bool, error) {
	if err := s.check(); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return nil, false, devicedb.Explain(s.path, fmt.Errorf("shrinking a queued APPEND: %w", err))
	}
	defer end()
	q, err := loadQueue(ctx, tx)
	if err != nil {
		return nil, false, err
	}
	at := slices.IndexFunc(q, func(r queueRow) bool { return r.id == id })
	if at < 0 {
		return nil, false, nil
	}
	c, err := command.Decode(q[at].cmd)
	if err != nil || c.Kind != command.Append {
		return nil, false, err
	}
	small := Placeholder(id, c.Date)
	if bytes.Equal(c.Body, small) {
		return nil, false, nil
	}
	expunged := false
	for _, r := range q[at+1:] {
		later, err := command.Decode(r.cmd)
		if err != nil {
			return nil, false, fmt.Errorf("reading queued change %d: %w", r.seq, err)
		}
		if !slices.Contains(later.IDs, id) {
			continue
		}
		switch later.Kind {
		case command.Expunge, command.DeleteMailbox:
			expunged = true
		case command.SetFlags, command.ClearFlags, command.ReplaceFlags:
		default:
			return nil, false, nil // a COPY or MOVE of it
		}
	}
	if !expunged {
		return nil, false, nil
	}
	// An EXPUNGE that left it (it lacked the flag asked for) leaves it
	// shown: what a UID shows never changes.
	if m, err := messageByID(ctx, tx, id); err != nil || m != nil {
		return nil, false, err
	}
	c.Body = small
	enc, err := command.Encode(c)
	if err != nil {
		return nil, false, fmt.Errorf("shrinking queued change %d: %w", q[at].seq, err)
	}
	a, done := s.writeApplier(ctx, tx, conn, end)
	defer done()
	// The whole queue, as UpgradeQueue: applied again from the position,
	// each change takes the virtual position it had.
	ov := &overlay{ctx: ctx, tx: tx, db: a, rest: q}
	if err := ov.takeBack(); err != nil {
		return nil, false, err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE queue SET cmd = ? WHERE seq = ?", enc, q[at].seq); err != nil {
		return nil, false, fmt.Errorf("shrinking queued change %d: %w", q[at].seq, err)
	}
	q[at].cmd = enc
	// The state as the take-back left it (a CREATE queued takes its
	// UIDVALIDITY anew), as UpgradeQueue.
	var pos int64
	if err := tx.QueryRowContext(ctx, "SELECT position, next_uidvalidity FROM state").Scan(&pos, &a.nextUV); err != nil {
		return nil, false, fmt.Errorf("reading state: %w", err)
	}
	changes, err := ov.reapply(a, uint64(pos), nil, nil)
	if err != nil {
		return nil, false, err
	}
	if err := tx.Commit(); err != nil {
		return nil, false, devicedb.Explain(s.path, fmt.Errorf("committing a shrunk APPEND: %w", err))
	}
	end()
	s.committed(ctx)
	return &Result{Changes: changes}, true, nil
}
