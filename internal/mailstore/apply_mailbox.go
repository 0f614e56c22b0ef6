package mailstore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"cspool/internal/command"
)

// maxUIDValidity is the largest UIDVALIDITY (a nonzero 32-bit number).
const maxUIDValidity = 1<<32 - 1

// parentID names the level-th parent mailbox created implicitly by entry:
// the first 16 bytes of SHA-256("cspool/v1 parent" || entry || uint32be(level)).
func parentID(entry command.ID, level int) command.ID {
	h := sha256.New()
	h.Write([]byte("cspool/v1 parent"))
	h.Write(entry[:])
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(level))
	h.Write(b[:])
	var id command.ID
	copy(id[:], h.Sum(nil))
	return id
}

// insertMailbox creates a mailbox with the next UIDVALIDITY.
func (a *applier) insertMailbox(id command.ID, name, specialUse string) (*mailboxRow, error) {
	if clash, err := mailboxByID(a.ctx, a, id); err != nil {
		return nil, err
	} else if clash != nil {
		return nil, reject(ReasonIDExists, "mailbox id %s exists", id)
	}
	if a.nextUV > maxUIDValidity {
		return nil, fmt.Errorf("creating %q: UIDVALIDITY space exhausted", name)
	}
	uv := a.nextUV
	a.nextUV++
	mb := &mailboxRow{id: id, name: name, specialUse: specialUse, uidValidity: uv, uidNext: 1, modSeq: int64(a.pos)}
	err := a.QueryRowContext(a.ctx, `INSERT INTO mailboxes (id, name, special_use, uidvalidity, uidnext, highest_modseq)
		VALUES (?, ?, ?, ?, 1, ?) RETURNING mid`, id[:], name, specialUse, uv, int64(a.pos)).Scan(&mb.mid)
	if err != nil {
		return nil, fmt.Errorf("creating mailbox: %w", err)
	}
	a.change(Change{Kind: MailboxCreated, Mailbox: id, Name: name})
	return mb, nil
}

// createWithParents creates name (named id) and any missing superior
// names (RFC 9051 section 6.3.4), outermost first. It is rejected, if at
// all, before it creates anything (checkCreate).
func (a *applier) createWithParents(id command.ID, name, specialUse string) (*mailboxRow, error) {
	if err := a.checkCreate(id, name, true); err != nil {
		return nil, err
	}
	if err := a.createParents(id, name); err != nil {
		return nil, err
	}
	return a.insertMailbox(id, name, specialUse)
}

// checkCreate rejects the creation of name's missing superior names (the
// level-th named parentID(id, level)) and, with self, of name itself
// (named id) when one of their ids names a mailbox already. It only
// reads: an entry that creates a mailbox after checking it so is
// rejected, if at all, before its first write, and needs no savepoint.
func (a *applier) checkCreate(id command.ID, name string, self bool) error {
	for level, p := range parents(name) {
		mb, err := mailboxByName(a.ctx, a, p)
		if err != nil {
			return err
		}
		if mb != nil {
			continue
		}
		pid := parentID(id, level)
		if clash, err := mailboxByID(a.ctx, a, pid); err != nil {
			return err
		} else if clash != nil {
			return reject(ReasonIDExists, "mailbox id %s exists", pid)
		}
	}
	if !self {
		return nil
	}
	if clash, err := mailboxByID(a.ctx, a, id); err != nil {
		return err
	} else if clash != nil {
		return reject(ReasonIDExists, "mailbox id %s exists", id)
	}
	return nil
}

// createParents creates the missing superior names of name, the level-th
// named parentID(id, level).
func (a *applier) createParents(id command.ID, name string) error {
	for level, p := range parents(name) {
		mb, err := mailboxByName(a.ctx, a, p)
		if err != nil {
			return err
		}
		if mb == nil {
			if _, err := a.insertMailbox(parentID(id, level), p, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolveExisting finds the mailbox a RenameMailbox or DeleteMailbox acts
// on: as resolve, except inside a rebase, where an id that does not exist
// does not fall back to the name (the name may be a mailbox of the
// superseded history the command's author never saw).
func (a *applier) resolveExisting(c *command.Command) (*mailboxRow, error) {
	if a.rebase != nil && !c.MailboxID.IsZero() {
		return mailboxByID(a.ctx, a, c.MailboxID)
	}
	return a.resolve(c.MailboxID, c.Mailbox)
}

func (a *applier) createMailbox(c *command.Command) error {
	name := NormalizeName(c.Mailbox)
	if mb, err := mailboxByName(a.ctx, a, name); err != nil {
		return err
	} else if mb != nil {
		return reject(ReasonMailboxExists, "mailbox %q exists", name)
	}
	_, err := a.createWithParents(a.entry, name, c.SpecialUse)
	return err
}

func (a *applier) renameMailbox(c *command.Command) error {
	src, err := a.resolveExisting(c)
	if err != nil {
		return err
	}
	if src == nil {
		return reject(ReasonNoMailbox, "no mailbox %q to rename", c.Mailbox)
	}
	newName := NormalizeName(c.NewName)
	if newName == src.name {
		return nil
	}
	if src.id == InboxID() {
		return a.renameInbox(src, newName)
	}
	if isChild(newName, src.name) {
		return reject(ReasonInvalid, "cannot rename %q into itself", src.name)
	}
	all, err := allMailboxes(a.ctx, a.tx)
	if err != nil {
		return err
	}
	// The renamed set: src and its children, each with its new name.
	type move struct {
		mb      *mailboxRow
		newName string
	}
	var moves []move
	final := map[string]bool{}
	for _, mb := range all {
		switch {
		case mb.mid == src.mid:
			moves = append(moves, move{mb, newName})
		case isChild(mb.name, src.name):
			moves = append(moves, move{mb, newName + mb.name[len(src.name):]})
		default:
			final[mb.name] = true
		}
	}
	for _, m := range moves {
		if final[m.newName] {
			return reject(ReasonMailboxExists, "mailbox %q exists", m.newName)
		}
		final[m.newName] = true
	}
	// The superior names of newName are none of the renamed set's, old or
	// new (newName is no child of src): creating them afterwards is
	// checked now, before the first write.
	if err := a.checkCreate(a.entry, newName, false); err != nil {
		return err
	}
	// Two steps, so that no intermediate state has two equal names: first
	// to names no command can carry (a control character), then to the
	// final names.
	for _, m := range moves {
		if _, err := a.ExecContext(a.ctx, "UPDATE mailboxes SET name = ? WHERE mid = ?",
			fmt.Sprintf("\x00%d", m.mb.mid), m.mb.mid); err != nil {
			return fmt.Errorf("renaming mailbox: %w", err)
		}
	}
	for _, m := range moves {
		if _, err := a.ExecContext(a.ctx, "UPDATE mailboxes SET name = ?, highest_modseq = ? WHERE mid = ?",
			m.newName, int64(a.pos), m.mb.mid); err != nil {
			return fmt.Errorf("renaming mailbox: %w", err)
		}
		if err := a.renameSubscription(m.mb.name, m.newName); err != nil {
			return err
		}
		a.change(Change{Kind: MailboxRenamed, Mailbox: m.mb.id, Name: m.newName, OldName: m.mb.name})
	}
	return a.createParents(a.entry, newName)
}

// renameSubscription carries a subscription over to the new name.
func (a *applier) renameSubscription(old, name string) error {
	res, err := a.ExecContext(a.ctx, "DELETE FROM subscriptions WHERE name = ?", old)
	if err != nil {
		return fmt.Errorf("renaming subscription: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	if _, err := a.ExecContext(a.ctx, "INSERT OR IGNORE INTO subscriptions (name) VALUES (?)", name); err != nil {
		return fmt.Errorf("renaming subscription: %w", err)
	}
	return nil
}

// renameInbox follows RFC 3501 section 6.3.5: a new mailbox takes all of
// INBOX's messages (in UID order, new UIDs), INBOX stays, empty, with its
// UIDVALIDITY; INBOX's children are not renamed.
func (a *applier) renameInbox(inbox *mailboxRow, newName string) error {
	if mb, err := mailboxByName(a.ctx, a, newName); err != nil {
		return err
	} else if mb != nil {
		return reject(ReasonMailboxExists, "mailbox %q exists", newName)
	}
	dest, err := a.createWithParents(a.entry, newName, "")
	if err != nil {
		return err
	}
	msgs, err := a.messagesIn(inbox.mid)
	if err != nil {
		return err
	}
	from := dest.uidNext
	for _, m := range msgs {
		a.change(Change{Kind: MessageExpunged, Mailbox: inbox.id, UID: UID(m.uid), Message: m.id})
		uid := a.takeUID(dest)
		if _, err := a.ExecContext(a.ctx, "UPDATE messages SET mailbox = ?, uid = ?, modseq = ? WHERE rid = ?",
			dest.mid, int64(uid), int64(a.pos), m.rid); err != nil {
			return fmt.Errorf("moving message: %w", err)
		}
		a.change(Change{Kind: MessageAdded, Mailbox: dest.id, UID: uid, Message: m.id, Flags: m.flags.list(), Name: dest.name})
	}
	if err := a.writeUIDNext(dest, from); err != nil {
		return err
	}
	if len(msgs) > 0 {
		return a.touch(inbox.mid)
	}
	return nil
}

// messagesIn lists a mailbox's messages in UID order.
func (a *applier) messagesIn(mid int64) ([]*messageRow, error) {
	rows, err := a.QueryContext(a.ctx, "SELECT "+messageColumns+messageFrom+"WHERE m.mailbox = ? ORDER BY m.uid", mid)
	if err != nil {
		return nil, fmt.Errorf("listing messages: %w", err)
	}
	defer rows.Close()
	var out []*messageRow
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("listing messages: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing messages: %w", err)
	}
	return out, nil
}

// deleteMailbox removes a mailbox and its messages. Children stay (RFC 9051
// section 6.3.5) and so does a subscription to its name (section 6.3.7).
// In version 2 the command names the messages its author saw in the
// mailbox, and only those go (deleteSeen).
func (a *applier) deleteMailbox(c *command.Command) error {
	mb, err := a.resolveExisting(c)
	if err != nil {
		return err
	}
	if mb == nil {
		return reject(ReasonNoMailbox, "no mailbox %q to delete", c.Mailbox)
	}
	if mb.id == InboxID() {
		return reject(ReasonInbox, "INBOX cannot be deleted")
	}
	if a.rebase != nil && a.rebase.keeps(mb) {
		return reject(ReasonKept, "mailbox %q holds changes from before the restore", mb.name)
	}
	msgs, err := a.messagesIn(mb.mid)
	if err != nil {
		return err
	}
	if c.Version == command.Version2 {
		return a.deleteSeen(c, mb, msgs)
	}
	for _, m := range msgs {
		if err := a.deleteMessage(m); err != nil {
			return err
		}
	}
	return a.dropMailbox(mb)
}

// deleteSeen is deleteMailbox of version 2: it removes the messages of
// msgs (mb's) that c names, and mb if no other is left. A mailbox found
// by the name, the one c names by id being gone, is another the author
// never saw unless it holds a message c names (its own APPEND made it
// again): otherwise c is refused and it stays, even empty.
func (a *applier) deleteSeen(c *command.Command, mb *mailboxRow, msgs []*messageRow) error {
	seen := make(map[command.ID]bool, len(c.IDs))
	for _, id := range c.IDs {
		seen[id] = true
	}
	var gone []*messageRow
	var kept []command.ID
	for _, m := range msgs {
		if seen[m.id] {
			gone = append(gone, m)
		} else {
			kept = append(kept, m.id)
		}
	}
	if !c.MailboxID.IsZero() && mb.id != c.MailboxID && len(gone) == 0 {
		return reject(ReasonNoMailbox, "mailbox %q is gone; the one of its name now is another, holding none of the messages named", c.Mailbox)
	}
	a.out.Kept = append(a.out.Kept, kept...)
	for _, m := range gone {
		if err := a.deleteMessage(m); err != nil {
			return err
		}
	}
	if len(kept) == 0 {
		return a.dropMailbox(mb)
	}
	for _, m := range gone {
		a.change(Change{Kind: MessageExpunged, Mailbox: mb.id, UID: UID(m.uid), Message: m.id})
	}
	if len(gone) > 0 {
		return a.touch(mb.mid)
	}
	return nil
}

// dropMailbox deletes mb's row, its messages deleted already.
func (a *applier) dropMailbox(mb *mailboxRow) error {
	if _, err := a.ExecContext(a.ctx, "DELETE FROM mailboxes WHERE mid = ?", mb.mid); err != nil {
		return fmt.Errorf("deleting mailbox: %w", err)
	}
	a.change(Change{Kind: MailboxDeleted, Mailbox: mb.id, Name: mb.name})
	return nil
}

// subscribe adds or removes a name from the subscription list. A mailbox
// found by id is subscribed under its current name; a name with no mailbox
// may be subscribed too (RFC 9051 section 6.3.7).
func (a *applier) subscribe(c *command.Command) error {
	name := NormalizeName(c.Mailbox)
	if !c.MailboxID.IsZero() {
		mb, err := mailboxByID(a.ctx, a, c.MailboxID)
		if err != nil {
			return err
		}
		if mb != nil {
			name = mb.name
		}
	}
	q := "INSERT OR IGNORE INTO subscriptions (name) VALUES (?)"
	if c.Kind == command.Unsubscribe {
		q = "DELETE FROM subscriptions WHERE name = ?"
	}
	res, err := a.ExecContext(a.ctx, q, name)
	if err != nil {
		return fmt.Errorf("updating subscriptions: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		a.change(Change{Kind: SubscriptionChanged, Name: name, Subscribed: c.Kind == command.Subscribe})
	}
	return nil
}
