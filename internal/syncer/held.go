package syncer

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// A queued APPEND that the spool refuses alone for the quota (507: a spool
// run with --quota-margin, the APPEND acknowledged while it could not be
// reached or by a stale quota) is held (docs/MAILSTORE.md, "Changes made on
// this device"). Invariants:
//
//   - Held is the APPEND and every later queued change that depends on it
//     (dependents.take): these keep their order among themselves and stay
//     queued, shown as made. The changes queued after it that do not
//     depend on it are sent past it, in their order: the deletes that make
//     the room it waits for reach the spool.
//   - Sending past it changes nothing of the queue's exactly-once rules:
//     every send is a batch of queued changes on a head (appendFrom), and
//     the apply of the log takes back whatever of the queue the log did not
//     start with and applies it again after (mailstore), so the held
//     changes are applied again after the ones sent past them.
//   - The held APPEND alone is sent again when the spool may take it now
//     (heldRetryDue): a read states a lower usage than at the refusal, or
//     another quota, a newer checkpoint was seen (the spool
//     compacted), or Config.MaxBackoff has passed (a margin raised, a
//     spool that states no quota). Refused again, it stays held; taken, the
//     changes behind it follow in order.
//   - Nothing is dropped: Status.Held and the log say that it waits and
//     why, until it lands. The user may delete its message instead: an
//     APPEND whose message a later queued change expunges, and that
//     nothing queued copies or moves, gets a placeholder for its message
//     (a header, no body) under the same entry id, UID and flags, is no
//     longer held, and is sent with the changes of its message (shrinkHeld,
//     mailstore.ShrinkHeldAppend): the log gives the UIDs the device
//     showed, so no UIDVALIDITY changes. Only when none of the queue can
//     be in the log after the store's position (sendQueue's tries > 1):
//     a late landing of the original would be confirmed by its id against
//     the placeholder's provisional apply.
//   - The hold is in memory only: after a restart the APPEND is refused
//     once more (its batch halved down to it) and held again.
//   - While only held changes are queued, checkpoints are written of the
//     log's state (LogSnapshotter): the deletes sent past the APPEND give
//     their room back on this device's checkpoint, not only on another
//     device's.

// hold is the loop's state of a held APPEND.
type hold struct {
	id         command.ID // the APPEND's entry id
	size       int64      // the bytes it adds, about
	at         time.Time  // when it was last refused
	quota      keptQuota  // the usage and quota stated then
	checkpoint uint64     // the newest checkpoint seen then
}

// heldRetryDue reports whether the held APPEND is to be sent again now: a
// read stated a lower usage or another quota, a newer checkpoint was
// seen, or MaxBackoff passed since the refusal. A usage that rose (mail
// delivered) is no reason.
func (s *Syncer) heldRetryDue(h *hold) bool {
	u, l, _ := s.statedQuota()
	return u < h.quota.usage || l != h.quota.limit || s.Status().Checkpoint != h.checkpoint ||
		time.Since(h.at) >= s.cfg.MaxBackoff
}

// holdAppend holds queued APPEND e, refused alone for the quota.
func (s *Syncer) holdAppend(e mailstore.Queued, err error) {
	u, l, _ := s.statedQuota()
	h := &hold{id: e.ID, size: addsMail([]*command.Command{e.Cmd}), at: time.Now(),
		quota: keptQuota{usage: u, limit: l}, checkpoint: s.Status().Checkpoint}
	first := s.held == nil || s.held.id != e.ID
	s.held = h
	// The changes sent past it go in full batches again.
	s.sendMax, s.quotaHalved = 0, false
	s.quotaRefused.Store(true)
	if first {
		s.log.Warn("the spool refused a queued APPEND for the quota; it is held on this device, shown as made, and the changes that do not depend on it are sent past it; delete mail to make room",
			"seq", e.Seq, "bytes", h.size, "err", err)
	}
}

// shrinkHeld replaces the held APPEND's message by a placeholder if the
// user has deleted it meanwhile (mailstore.ShrinkHeldAppend) and ends the
// hold, so that the placeholder is sent with the changes of the message,
// and reports whether it did. Only sendQueue calls it, when none of the
// queue can be in the log after the store's position: the original
// APPEND, sent in a way that may still land, would be confirmed against
// the placeholder's apply.
func (s *Syncer) shrinkHeld(ctx context.Context) (bool, error) {
	var shrunk bool
	_, err := s.applyLocked(func() (*mailstore.Result, error) {
		res, ok, err := s.cfg.Store.ShrinkHeldAppend(ctx, s.held.id)
		if err == nil && res == nil {
			res = &mailstore.Result{}
		}
		shrunk = ok
		return res, err
	})
	if err != nil {
		return false, &storeError{fmt.Errorf("shrinking the held APPEND: %w", err)}
	}
	if !shrunk {
		return false, nil
	}
	s.log.Info("the APPEND held for the quota was deleted on this device before it reached the spool; a placeholder of its message is sent instead, with the changes of it",
		"bytes", s.held.size)
	s.unhold()
	s.refreshQueued(ctx)
	return true, nil
}

// expunges reports whether a change of q expunges message id: an Expunge
// naming it, or a DeleteMailbox that saw it. Then the store is asked to
// shrink the APPEND (shrinkHeld), which checks the rest.
func expunges(q []mailstore.Queued, id command.ID) bool {
	for _, e := range q {
		if (e.Cmd.Kind == command.Expunge || e.Cmd.Kind == command.DeleteMailbox) && slices.Contains(e.Cmd.IDs, id) {
			return true
		}
	}
	return false
}

// heldSkip returns, for each of q, whether it is held: the held APPEND
// and the changes after it that depend on it. It ends the hold (nil) when
// the APPEND is no longer queued, and keeps Status.Held up to date.
func (s *Syncer) heldSkip(q []mailstore.Queued) []bool {
	if s.held == nil {
		return nil
	}
	at := -1
	for i, e := range q {
		if e.ID == s.held.id {
			at = i
			break
		}
	}
	if at < 0 {
		s.unhold()
		return nil
	}
	skip := make([]bool, len(q))
	d := newDependents(q[at].ID, q[at].Cmd)
	skip[at] = true
	n := 1
	for i := at + 1; i < len(q); i++ {
		if d.take(q[i].ID, q[i].Cmd) {
			skip[i] = true
			n++
		}
	}
	msg := fmt.Sprintf("an APPEND queued on this device (about %d bytes) is refused by the spool for the quota: it waits here, shown as made, until there is room; delete mail to make room (the other changes are sent)", s.held.size)
	if n > 1 {
		msg += fmt.Sprintf("; %d changes made after it that name its message or mailbox wait with it", n-1)
	}
	if _, l, ok := s.statedQuota(); ok && l > 0 && s.held.size > l {
		msg += fmt.Sprintf("; it is larger than the whole quota (%d bytes), so deleting mail cannot make its room: ask the spool's operator to raise the quota or its margin", l)
	}
	s.mu.Lock()
	s.status.Held, s.heldCount = msg, n
	s.mu.Unlock()
	return skip
}

// unhold ends the hold: the APPEND landed, or left the queue.
func (s *Syncer) unhold() {
	if s.held == nil {
		return
	}
	s.log.Info("the APPEND held for the quota is no longer held", "bytes", s.held.size)
	s.held = nil
	s.mu.Lock()
	s.status.Held, s.heldCount = "", 0
	s.mu.Unlock()
}

// holding reports whether a queued APPEND is held and how many queued
// changes wait with it.
func (s *Syncer) holding() (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heldCount > 0, s.heldCount
}

// onlyHeld reports whether every queued change is held for the quota:
// then nothing this device sends lands before there is room, and a
// checkpoint is written of the log's state (LogSnapshotter), so that the
// room of the mail deleted comes back.
func (s *Syncer) onlyHeld() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heldCount > 0 && s.status.Queued == s.heldCount
}

// LogSnapshotter is the optional capability of a Store to encode the log's
// state alone while changes wait in its queue (mailstore.Store's
// WriteLogSnapshot): a device whose queue holds only an APPEND held for
// the quota, and what depends on it, can still write the checkpoint that
// gives back the room of the mail deleted.
type LogSnapshotter interface {
	WriteLogSnapshot(ctx context.Context, use func(info mailstore.SnapshotInfo, encode func(io.Writer) error) error) error
}

var _ LogSnapshotter = (*mailstore.Store)(nil)

// dependents is what the held changes name: a later change that names
// any of it, or adds mail, is held too (take).
type dependents struct {
	msgs  map[command.ID]bool
	mbs   map[command.ID]bool
	names []string
}

func newDependents(id command.ID, c *command.Command) *dependents {
	d := &dependents{msgs: map[command.ID]bool{}, mbs: map[command.ID]bool{}}
	d.add(id, c)
	return d
}

// take reports whether change c (entry id), queued after the held ones,
// depends on them, and if so adds what it names. It does when it:
//
//   - adds mail (an APPEND): the room made goes to the held APPEND first,
//     and the mail a user adds lands in the order it was added;
//   - names a held message (its flags, its expunge, a COPY or MOVE of it,
//     a DELETE of version 2 that saw it), or one a held change made;
//   - is a COPY or MOVE into a mailbox a held change names: the messages
//     it places would otherwise take the UIDs the held ones were shown
//     with;
//   - is a mailbox command (create, rename, delete, (un)subscribe) that
//     names a mailbox a held change names, by id or by name, or one
//     above or below it in the hierarchy.
//
// Flags and expunges of other messages, also in the held APPEND's mailbox,
// go ahead: they change no UID and no name it relies on.
func (d *dependents) take(id command.ID, c *command.Command) bool {
	dep := c.Kind == command.Append
	for _, m := range c.IDs {
		dep = dep || d.msgs[m]
	}
	switch c.Kind {
	case command.Copy, command.Move, command.CreateMailbox, command.RenameMailbox, command.DeleteMailbox,
		command.Subscribe, command.Unsubscribe:
		dep = dep || (!c.MailboxID.IsZero() && d.mbs[c.MailboxID]) || d.named(c.Mailbox) ||
			(c.Kind == command.RenameMailbox && d.named(c.NewName))
	}
	if dep {
		d.add(id, c)
	}
	return dep
}

// add notes what change c (entry id), held, names or makes.
func (d *dependents) add(id command.ID, c *command.Command) {
	for i, m := range c.IDs {
		d.msgs[m] = true
		if c.Kind == command.Copy {
			d.msgs[command.DeriveID(id, uint32(i))] = true
		}
	}
	switch c.Kind {
	case command.Append:
		d.msgs[id] = true
	case command.SetFlags, command.ClearFlags, command.ReplaceFlags, command.Expunge:
		return
	}
	// A mailbox a change creates (an APPEND's, a COPY's or a MOVE's
	// target gone meanwhile, a CREATE) is named by its entry.
	d.mbs[id] = true
	if !c.MailboxID.IsZero() {
		d.mbs[c.MailboxID] = true
	}
	for _, n := range []string{c.Mailbox, c.NewName} {
		if n != "" {
			d.names = append(d.names, mailstore.NormalizeName(n))
		}
	}
}

// named reports whether name is a held change's mailbox, or above or
// below one in the hierarchy.
func (d *dependents) named(name string) bool {
	if name == "" {
		return false
	}
	name = mailstore.NormalizeName(name)
	const delim = string(mailstore.Delim)
	for _, n := range d.names {
		if n == name || strings.HasPrefix(n, name+delim) || strings.HasPrefix(name, n+delim) {
			return true
		}
	}
	return false
}
