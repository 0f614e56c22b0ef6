package mailstore

import (
	"context"
	"fmt"

	"cspool/internal/command"
)

// UpgradeQueue gives the changes queued on this device as an Expunge or a
// DeleteMailbox of version 1 (an IMAP EXPUNGE or DELETE made by a release
// before command version 2, or while the device wrote version 1:
// WritesVersion2), the view their author had, as version 2 (docs/FORMAT.md
// §3, "Version 2"), so that sent they take only what the device showed.
// Version 1 would take what the log holds when it applies them: what
// another device filed meanwhile included. SetReaders runs it when the
// device starts writing version 2.
//
// The author's view of the i-th queued change is the log's state this
// store has applied with the changes queued before it on top: the queue
// is taken back, and each change rewritten and applied again, in order,
// in one transaction. An Expunge gets `\Deleted` (all an IMAP EXPUNGE
// named) and the mailbox of the messages it names, if they were all in
// one; a DeleteMailbox the messages then in its mailbox. A change sent
// already (the spool gave it a position) stays as it was written, as the
// log applies it. It returns how many changes it rewrote; with none to
// rewrite it writes nothing. The syncer also runs it at a read that holds
// an entry of format 4 while the device writes version 1.
func (s *Store) UpgradeQueue(ctx context.Context) (int, error) {
	return s.upgradeQueue(ctx, -1)
}

// upgradeQueue is UpgradeQueue; readers, unless negative, is recorded as
// local.readers in the same transaction (SetReaders).
func (s *Store) upgradeQueue(ctx context.Context, readers int) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return 0, fmt.Errorf("upgrading queued changes: %w", err)
	}
	defer end()
	q, err := loadQueue(ctx, tx)
	if err != nil {
		return 0, err
	}
	commit := func() error {
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("committing upgraded queued changes: %w", err)
		}
		end()
		if readers >= 0 {
			s.readers.Store(int32(readers))
		}
		s.committed(ctx)
		return nil
	}
	if readers >= 0 {
		if _, err := tx.ExecContext(ctx, "UPDATE local SET readers = ?", readers); err != nil {
			return 0, fmt.Errorf("recording the entry formats the user's devices read: %w", err)
		}
	}
	old := false
	for _, r := range q {
		if c, err := command.Decode(r.cmd); err == nil && c.Version == 0 && (c.Kind == command.Expunge || c.Kind == command.DeleteMailbox) {
			old = true
			break
		}
	}
	if !old {
		if readers >= 0 {
			return 0, commit()
		}
		return 0, nil
	}
	a, done := s.writeApplier(ctx, tx, conn, end)
	defer done()
	n := 0
	ov := &overlay{ctx: ctx, tx: tx, db: a, rest: q}
	ov.rewrite = func(seq int64, id command.ID, cmd *command.Command) (*command.Command, error) {
		// One sent already is in the log as it was written, and applies
		// so: rewritten here, this device would apply it by another rule.
		if _, sent, err := appendedAt(ctx, tx, id); err != nil || sent {
			return cmd, err
		}
		up, err := a.authorsView(cmd)
		if err != nil || up == nil {
			return cmd, err
		}
		enc, err := command.Encode(up)
		if err != nil {
			return nil, fmt.Errorf("rewriting queued change %d: %w", seq, err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE queue SET cmd = ? WHERE seq = ?", enc, seq); err != nil {
			return nil, fmt.Errorf("rewriting queued change %d: %w", seq, err)
		}
		n++
		return up, nil
	}
	if err := ov.takeBack(); err != nil {
		return 0, err
	}
	// The state as the take-back left it: a CREATE queued had taken the
	// next UIDVALIDITY, which the take-back gave back and the CREATE
	// applied again takes anew.
	var pos int64
	if err := tx.QueryRowContext(ctx, "SELECT position, next_uidvalidity FROM state").Scan(&pos, &a.nextUV); err != nil {
		return 0, fmt.Errorf("reading state: %w", err)
	}
	if _, err := ov.reapply(a, uint64(pos), nil, nil); err != nil {
		return 0, err
	}
	if err := commit(); err != nil {
		return 0, err
	}
	return n, nil
}

// authorsView returns cmd, an Expunge or DeleteMailbox of version 1, as
// version 2 with the view of the state the applier is at, or nil for any
// other command.
func (a *applier) authorsView(cmd *command.Command) (*command.Command, error) {
	if cmd.Version != 0 {
		return nil, nil
	}
	up := *cmd
	up.Version = command.Version2
	switch cmd.Kind {
	case command.Expunge:
		up.Flags = []string{`\Deleted`}
		var in command.ID
		one := true
		for _, id := range cmd.IDs {
			m, err := messageByID(a.ctx, a, id)
			if err != nil {
				return nil, err
			}
			if m == nil {
				continue
			}
			if !in.IsZero() && m.mailboxID != in {
				one = false
			}
			in = m.mailboxID
		}
		if one {
			up.MailboxID = in
		}
	case command.DeleteMailbox:
		mb, err := a.resolve(cmd.MailboxID, cmd.Mailbox)
		if err != nil {
			return nil, err
		}
		up.IDs = nil
		if mb != nil {
			msgs, err := a.messagesIn(mb.mid)
			if err != nil {
				return nil, err
			}
			for _, m := range msgs {
				up.IDs = append(up.IDs, m.id)
			}
		}
	default:
		return nil, nil
	}
	return &up, nil
}
