package mailstore

import (
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"cspool/internal/command"
)

// deliver puts the message into INBOX, named by the entry id.
func (a *applier) deliver(c *command.Command) error {
	if a.inbox == nil {
		inbox, err := mailboxByID(a.ctx, a, InboxID())
		if err != nil {
			return err
		}
		if inbox == nil {
			return errors.New("INBOX is missing")
		}
		a.inbox = inbox
	}
	return a.newMessage(a.inbox, c.Body, c.Date, flagSet{}, true)
}

// appendMessage puts the message into the target mailbox, recreating it
// under the command's name if it no longer exists.
func (a *applier) appendMessage(c *command.Command) error {
	mb, err := a.target(c)
	if err != nil {
		return err
	}
	flags, err := a.canonicalFlags(c.Flags, true)
	if err != nil {
		return err
	}
	return a.newMessage(mb, c.Body, c.Date, flags, false)
}

// newMessage places a new message, named by the entry id, in mb; a
// delivery that repeats one held is rejected (duplicate.go).
func (a *applier) newMessage(mb *mailboxRow, body []byte, date int64, flags flagSet, delivery bool) error {
	if m, err := messageByID(a.ctx, a, a.entry); err != nil {
		return err
	} else if m != nil {
		return reject(ReasonIDExists, "message id %s exists", a.entry)
	}
	if delivery {
		if rej, err := a.duplicateOf(body, date); err != nil {
			return err
		} else if rej != nil {
			return rej
		}
	}
	bid, err := a.storeBody(body)
	if err != nil {
		return err
	}
	uid, err := a.insertMessage(mb, a.entry, bid, int64(len(body)), date, flags)
	if err != nil {
		return err
	}
	a.out.Placed = append(a.out.Placed, Placement{ID: a.entry, Mailbox: mb.id, UID: uid, UIDValidity: uint32(mb.uidValidity)})
	return nil
}

// target finds the destination of an Append, Copy or Move: by id, then by
// name; when neither exists, a mailbox of that name is created (named by the
// entry), so a message sent to a mailbox deleted meanwhile is not lost.
func (a *applier) target(c *command.Command) (*mailboxRow, error) {
	mb, err := a.resolve(c.MailboxID, c.Mailbox)
	if err != nil || mb != nil {
		return mb, err
	}
	return a.createWithParents(a.entry, NormalizeName(c.Mailbox), "")
}

// resolve finds a mailbox by id first, then by name; nil if neither exists.
func (a *applier) resolve(id command.ID, name string) (*mailboxRow, error) {
	if !id.IsZero() {
		mb, err := mailboxByID(a.ctx, a, id)
		if err != nil || mb != nil {
			return mb, err
		}
	}
	return mailboxByName(a.ctx, a, name)
}

// storeBody stores b once: a body already stored (same SHA-256) gains a
// reference; a new one is parsed and inserted.
func (a *applier) storeBody(b []byte) (int64, error) {
	var digest [sha256.Size]byte
	var p parsedMessage
	if prep := a.prepared.of(b); prep != nil {
		digest, p = prep.digest, prep.parsed
	} else {
		digest = sha256.Sum256(b)
		var err error
		if p, err = parseMessage(a.parser, b); err != nil {
			return 0, err
		}
	}
	var bid int64
	// Most bodies are new: inserted in one statement, which inserts
	// nothing (and returns no row) when the digest is stored already.
	err := a.QueryRowContext(a.ctx, `INSERT INTO bodies (digest, refs, size, header_len, parsed, envelope, structure, origin, forms_version)
		VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING RETURNING bid`,
		digest[:], len(b), p.headerLen, p.status, p.envelope, p.structure, int64(a.pos), formsVersion(a.parser)).Scan(&bid)
	if errors.Is(err, sql.ErrNoRows) {
		// Stored already: one more reference. A body whose origin is
		// unknown (a rebase's, restoration.go) takes this entry's
		// position: the entry holds its bytes.
		err = a.QueryRowContext(a.ctx, "UPDATE bodies SET refs = refs + 1, origin = iif(origin = 0, ?, origin) WHERE digest = ? RETURNING bid",
			int64(a.pos), digest[:]).Scan(&bid)
		if err != nil {
			return 0, fmt.Errorf("sharing body: %w", err)
		}
		return bid, nil
	}
	if err != nil {
		return 0, fmt.Errorf("storing body: %w", err)
	}
	if _, err := a.ExecContext(a.ctx, "INSERT INTO forms (bid, envelope) VALUES (?, ?)", bid, nullBlob(p.envelopeWire)); err != nil {
		return 0, fmt.Errorf("storing body: %w", err)
	}
	if _, err := a.ExecContext(a.ctx, "INSERT INTO structures (bid, structure) VALUES (?, ?)", bid, nullBlob(p.structureWire)); err != nil {
		return 0, fmt.Errorf("storing body: %w", err)
	}
	if err := insertBlob(a.ctx, a.ExecContext, a.conn, bid, b); err != nil {
		return 0, fmt.Errorf("storing body: %w", err)
	}
	return bid, nil
}

// nullBlob is b, or NULL for nil.
func nullBlob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// bodyBack applies a Body entry: it changes nothing but the origin of a
// stored body with its bytes whose origin is unknown (restoration.go).
func (a *applier) bodyBack(c *command.Command) error {
	digest := sha256.Sum256(c.Body)
	if _, err := a.ExecContext(a.ctx, "UPDATE bodies SET origin = ? WHERE digest = ? AND origin = 0", int64(a.pos), digest[:]); err != nil {
		return fmt.Errorf("recording body origin: %w", err)
	}
	return nil
}

func (a *applier) refBody(bid int64) error {
	if _, err := a.ExecContext(a.ctx, "UPDATE bodies SET refs = refs + 1 WHERE bid = ?", bid); err != nil {
		return fmt.Errorf("sharing body: %w", err)
	}
	return nil
}

// releaseBody drops one reference, and the body with its last one.
func (a *applier) releaseBody(bid int64) error {
	var refs int64
	if err := a.QueryRowContext(a.ctx, "SELECT refs FROM bodies WHERE bid = ?", bid).Scan(&refs); err != nil {
		return fmt.Errorf("releasing body: %w", err)
	}
	var err error
	if refs <= 1 {
		if _, err = a.ExecContext(a.ctx, "DELETE FROM blobs WHERE bid = ?", bid); err == nil {
			_, err = a.ExecContext(a.ctx, "DELETE FROM bodies WHERE bid = ?", bid)
		}
	} else {
		_, err = a.ExecContext(a.ctx, "UPDATE bodies SET refs = refs - 1 WHERE bid = ?", bid)
	}
	if err != nil {
		return fmt.Errorf("releasing body: %w", err)
	}
	return nil
}

// nextUID takes mb's UIDNEXT and advances it.
func (a *applier) nextUID(mb *mailboxRow) (UID, error) {
	var uid int64
	err := a.QueryRowContext(a.ctx,
		"UPDATE mailboxes SET uidnext = uidnext + 1, highest_modseq = ? WHERE mid = ? RETURNING uidnext - 1",
		int64(a.pos), mb.mid).Scan(&uid)
	if err != nil {
		return 0, fmt.Errorf("assigning a uid in %q: %w", mb.name, err)
	}
	mb.uidNext, mb.modSeq = uid+1, int64(a.pos)
	return UID(uid), nil
}

func (a *applier) touch(mid int64) error {
	if _, err := a.ExecContext(a.ctx, "UPDATE mailboxes SET highest_modseq = ? WHERE mid = ?", int64(a.pos), mid); err != nil {
		return fmt.Errorf("updating mailbox modseq: %w", err)
	}
	return nil
}

// touchAll sets the modseq of each mailbox of mids, once.
func (a *applier) touchAll(mids []int64) error {
	for _, mid := range mids {
		if err := a.touch(mid); err != nil {
			return err
		}
	}
	return nil
}

// takeUID takes mb's UIDNEXT in memory, for an entry that places many
// messages into mb: it writes the mailbox row once, when done
// (writeUIDNext), not once a message. Nothing else writes mb's UIDNEXT
// meanwhile.
func (a *applier) takeUID(mb *mailboxRow) UID {
	uid := UID(mb.uidNext)
	mb.uidNext++
	mb.modSeq = int64(a.pos)
	return uid
}

// writeUIDNext writes the UIDNEXT takeUID advanced, if it did: from is
// mb's UIDNEXT before.
func (a *applier) writeUIDNext(mb *mailboxRow, from int64) error {
	if mb == nil || mb.uidNext == from {
		return nil
	}
	if _, err := a.ExecContext(a.ctx, "UPDATE mailboxes SET uidnext = ?, highest_modseq = ? WHERE mid = ?",
		mb.uidNext, int64(a.pos), mb.mid); err != nil {
		return fmt.Errorf("assigning uids in %q: %w", mb.name, err)
	}
	return nil
}

func (a *applier) insertMessage(mb *mailboxRow, id command.ID, bid, size, date int64, flags flagSet) (UID, error) {
	uid, err := a.nextUID(mb)
	if err != nil {
		return 0, err
	}
	return uid, a.insertMessageAt(mb, uid, id, bid, size, date, flags)
}

// insertMessageAt inserts a message at uid, taken already.
func (a *applier) insertMessageAt(mb *mailboxRow, uid UID, id command.ID, bid, size, date int64, flags flagSet) error {
	_, err := a.ExecContext(a.ctx, `INSERT INTO messages (id, mailbox, uid, body, date, size, flags, keywords, modseq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id[:], mb.mid, int64(uid), bid, date, size, flags.bits, flags.encodeKeywords(), int64(a.pos))
	if err != nil {
		return fmt.Errorf("inserting message: %w", err)
	}
	a.change(Change{Kind: MessageAdded, Mailbox: mb.id, UID: uid, Message: id, Flags: flags.list(), Name: mb.name})
	return nil
}

// copyMessages copies each existing message named by the command; the i-th
// id's copy is named DeriveID(entry, i) whether or not earlier ids were
// skipped.
func (a *applier) copyMessages(c *command.Command) error {
	targetOf := a.lazyTarget(c)
	var dest *mailboxRow
	var from int64 // dest's UIDNEXT before
	for i, src := range c.IDs {
		m, err := a.present(src)
		if err != nil {
			return err
		}
		if m == nil {
			continue
		}
		newID := command.DeriveID(a.entry, uint32(i))
		if clash, err := messageByID(a.ctx, a, newID); err != nil {
			return err
		} else if clash != nil {
			a.out.Skipped = append(a.out.Skipped, src)
			continue
		}
		if dest == nil {
			if dest, err = targetOf(); err != nil {
				return err
			}
			from = dest.uidNext
		}
		if err := a.refBody(m.body); err != nil {
			return err
		}
		uid := a.takeUID(dest)
		if err := a.insertMessageAt(dest, uid, newID, m.body, m.size, m.date, m.flags); err != nil {
			return err
		}
		a.out.Placed = append(a.out.Placed, Placement{Source: src, ID: newID, Mailbox: dest.id, UID: uid, UIDValidity: uint32(dest.uidValidity)})
	}
	return a.writeUIDNext(dest, from)
}

// present returns the message named id, or nil after recording it as
// skipped when it no longer exists.
func (a *applier) present(id command.ID) (*messageRow, error) {
	m, err := messageByID(a.ctx, a, id)
	if err == nil && m == nil {
		a.out.Skipped = append(a.out.Skipped, id)
	}
	return m, err
}

// lazyTarget returns a function giving c's destination mailbox, resolved
// (or recreated) only when the first message is actually placed there.
func (a *applier) lazyTarget(c *command.Command) func() (*mailboxRow, error) {
	var dest *mailboxRow
	return func() (*mailboxRow, error) {
		if dest != nil {
			return dest, nil
		}
		var err error
		dest, err = a.target(c)
		return dest, err
	}
}

// moveMessages moves each existing message named by the command into the
// destination: same id, body and flags, a new UID there.
func (a *applier) moveMessages(c *command.Command) error {
	targetOf := a.lazyTarget(c)
	var touched []int64 // each source mailbox's modseq is set once
	var dest *mailboxRow
	var from int64 // dest's UIDNEXT before
	for _, id := range c.IDs {
		m, err := a.present(id)
		if err != nil {
			return err
		}
		if m == nil {
			continue
		}
		if dest == nil {
			if dest, err = targetOf(); err != nil {
				return err
			}
			from = dest.uidNext
		}
		if !slices.Contains(touched, m.mailbox) {
			touched = append(touched, m.mailbox)
		}
		a.change(Change{Kind: MessageExpunged, Mailbox: m.mailboxID, UID: UID(m.uid), Message: id})
		uid := a.takeUID(dest)
		if _, err := a.ExecContext(a.ctx, "UPDATE messages SET mailbox = ?, uid = ?, modseq = ? WHERE rid = ?",
			dest.mid, int64(uid), int64(a.pos), m.rid); err != nil {
			return fmt.Errorf("moving message: %w", err)
		}
		a.change(Change{Kind: MessageAdded, Mailbox: dest.id, UID: uid, Message: id, Flags: m.flags.list(), Name: dest.name})
		a.out.Placed = append(a.out.Placed, Placement{Source: id, ID: id, Mailbox: dest.id, UID: uid, UIDValidity: uint32(dest.uidValidity)})
	}
	if err := a.writeUIDNext(dest, from); err != nil {
		return err
	}
	return a.touchAll(touched)
}

// expunge removes each existing message named by the command: in version
// 1 whatever its flags and wherever it is (the author chose the ids); in
// version 2 only one that carries every flag the command names
// (\Deleted, as IMAP's EXPUNGE wants) and is in the mailbox it names
// (the one the author expunged), so that a message another device took
// \Deleted off or filed elsewhere before the command reached the log
// stays (Outcome.Kept).
func (a *applier) expunge(c *command.Command) error {
	var need flagSet
	if c.Version == command.Version2 && len(c.Flags) > 0 {
		var err error
		if need, err = a.canonicalFlags(c.Flags, false); err != nil {
			return err
		}
	}
	var touched []int64 // each mailbox's modseq is set once
	for _, id := range c.IDs {
		m, err := messageByID(a.ctx, a, id)
		if err != nil {
			return err
		}
		if m == nil {
			a.out.Skipped = append(a.out.Skipped, id)
			continue
		}
		if !m.flags.has(need) || (c.Version == command.Version2 && !c.MailboxID.IsZero() && m.mailboxID != c.MailboxID) {
			a.out.Kept = append(a.out.Kept, id)
			continue
		}
		if err := a.deleteMessage(m); err != nil {
			return err
		}
		if !slices.Contains(touched, m.mailbox) {
			touched = append(touched, m.mailbox)
		}
		a.change(Change{Kind: MessageExpunged, Mailbox: m.mailboxID, UID: UID(m.uid), Message: id})
	}
	return a.touchAll(touched)
}

func (a *applier) deleteMessage(m *messageRow) error {
	if _, err := a.ExecContext(a.ctx, "DELETE FROM messages WHERE rid = ?", m.rid); err != nil {
		return fmt.Errorf("deleting message: %w", err)
	}
	return a.releaseBody(m.body)
}

// flags applies SetFlags, ClearFlags or ReplaceFlags to each existing
// message named; a message whose flags do not change is left untouched.
func (a *applier) flags(c *command.Command) error {
	given, err := a.canonicalFlags(c.Flags, c.Kind != command.ClearFlags)
	if err != nil {
		return err
	}
	var touched []int64 // each mailbox's modseq is set once
	for _, id := range c.IDs {
		m, err := messageByID(a.ctx, a, id)
		if err != nil {
			return err
		}
		if m == nil {
			a.out.Skipped = append(a.out.Skipped, id)
			continue
		}
		var next flagSet
		switch c.Kind {
		case command.SetFlags:
			next = m.flags.union(given)
		case command.ClearFlags:
			next = m.flags.minus(given)
		default:
			next = given
		}
		if next.equal(m.flags) {
			continue
		}
		if _, err := a.ExecContext(a.ctx, "UPDATE messages SET flags = ?, keywords = ?, modseq = ? WHERE rid = ?",
			next.bits, next.encodeKeywords(), int64(a.pos), m.rid); err != nil {
			return fmt.Errorf("updating flags: %w", err)
		}
		if !slices.Contains(touched, m.mailbox) {
			touched = append(touched, m.mailbox)
		}
		a.change(Change{Kind: FlagsChanged, Mailbox: m.mailboxID, UID: UID(m.uid), Message: id, Flags: next.list()})
	}
	return a.touchAll(touched)
}

// canonicalFlags turns a command's flags into a flagSet, keywords spelled
// as first written in this store. With learn, a keyword never seen before
// is recorded with the given spelling; without (ClearFlags), it is kept as
// given, as it cannot be on any message anyway.
func (a *applier) canonicalFlags(flags []string, learn bool) (flagSet, error) {
	var f flagSet
	// The keywords as flagSet.union would gather them one by one (the
	// first spelling of each, then sorted), but at once: a union per
	// keyword made a command of n keywords cost n².
	var seen map[string]bool
	for _, fl := range flags {
		if bit := systemFlag(fl); bit != 0 {
			f.bits |= bit
			continue
		}
		if seen[foldKeyword(fl)] {
			continue
		}
		spelled := fl
		err := a.QueryRowContext(a.ctx, "SELECT name FROM keywords WHERE fold = ?", foldKeyword(fl)).Scan(&spelled)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if learn {
				if _, err := a.ExecContext(a.ctx, "INSERT INTO keywords (fold, name) VALUES (?, ?)", foldKeyword(fl), fl); err != nil {
					return f, fmt.Errorf("recording keyword: %w", err)
				}
			}
		case err != nil:
			return f, fmt.Errorf("looking up keyword: %w", err)
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[foldKeyword(fl)] = true
		f.keywords = append(f.keywords, spelled)
	}
	sortKeywords(f.keywords)
	return f, nil
}
