package mailstore

import (
	"context"
	"fmt"
	"slices"

	"cspool/internal/command"
	"cspool/internal/devicedb"
)

// WithdrawAppend takes queued APPEND id out of the queue when the user
// has deleted its message before it reached the log: a later queued
// change expunges it (an Expunge naming it, or a DeleteMailbox that saw
// it), and every queued change that names it is a flag change, an
// Expunge or a DeleteMailbox. A COPY or MOVE of it keeps it queued: the
// message lives on in the copy. It reports whether it withdrew it.
//
// The APPEND leaves the queue, and so does every later change that named
// its message alone; a change that named it among others is rewritten
// without it. The queue from the APPEND on is taken back and applied
// again without it, in one transaction, and the result holds what
// sessions must hear, as after a take-back by the log: the message was
// shown expunged already, so mostly nothing, but a mailbox whose UIDNEXT
// shown goes down (the log will give its UID to the next message) gets a
// new UIDVALIDITY on this device.
//
// Only the sender of the queue may call it, and only when no attempt to
// send the changes it drops or rewrites can still land in the log: the
// store cannot know what was sent (docs/MAILSTORE.md, "Held for the
// quota").
func (s *Store) WithdrawAppend(ctx context.Context, id command.ID) (*Result, bool, error) {
	if err := s.check(); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return nil, false, devicedb.Explain(s.path, fmt.Errorf("withdrawing a queued APPEND: %w", err))
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
	if c, err := command.Decode(q[at].cmd); err != nil || c.Kind != command.Append {
		return nil, false, err
	}
	// What the later changes become: nil drops one.
	later := make([]*command.Command, len(q))
	named := make([]bool, len(q))
	expunged := false
	for i := at + 1; i < len(q); i++ {
		c, err := command.Decode(q[i].cmd)
		if err != nil {
			return nil, false, fmt.Errorf("reading queued change %d: %w", q[i].seq, err)
		}
		later[i] = c
		if !slices.Contains(c.IDs, id) {
			continue
		}
		named[i] = true
		switch c.Kind {
		case command.Expunge, command.DeleteMailbox:
			expunged = true
		case command.SetFlags, command.ClearFlags, command.ReplaceFlags:
		default:
			return nil, false, nil // a COPY or MOVE of it
		}
		c.IDs = slices.DeleteFunc(slices.Clone(c.IDs), func(m command.ID) bool { return m == id })
		if len(c.IDs) == 0 && c.Kind != command.DeleteMailbox {
			later[i] = nil
		}
	}
	if !expunged {
		return nil, false, nil
	}
	a, done := s.writeApplier(ctx, tx, conn, end)
	defer done()
	ov := &overlay{ctx: ctx, tx: tx, db: a, rest: q[at:]}
	if err := ov.takeBack(); err != nil {
		return nil, false, err
	}
	ov.rest = nil
	for i := at; i < len(q); i++ {
		if i == at || later[i] == nil {
			if _, err := tx.ExecContext(ctx, "DELETE FROM queue WHERE seq = ?", q[i].seq); err != nil {
				return nil, false, fmt.Errorf("withdrawing a queued APPEND: %w", err)
			}
			continue
		}
		r := q[i]
		if named[i] {
			if r.cmd, err = command.Encode(later[i]); err != nil {
				return nil, false, fmt.Errorf("rewriting queued change %d: %w", r.seq, err)
			}
			if _, err := tx.ExecContext(ctx, "UPDATE queue SET cmd = ? WHERE seq = ?", r.cmd, r.seq); err != nil {
				return nil, false, fmt.Errorf("rewriting queued change %d: %w", r.seq, err)
			}
		}
		ov.rest = append(ov.rest, r)
	}
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
		return nil, false, devicedb.Explain(s.path, fmt.Errorf("committing a withdrawn APPEND: %w", err))
	}
	end()
	s.committed(ctx)
	return &Result{Changes: changes}, true, nil
}
