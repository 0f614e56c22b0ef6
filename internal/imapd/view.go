package imapd

import (
	"errors"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"cspool/internal/command"
)

// view is one session's view of a selected mailbox. Each view has a
// MailboxTracker of its own, holding only this session, so what is queued
// can differ between sessions (a session's own STORE is not queued back to
// it); all of them are fed the same changes under the mailbox mutex, so
// their counts stay in lock-step with the UID list.
type view struct {
	mt       *imapserver.MailboxTracker
	st       *imapserver.SessionTracker
	serial   uint64 // selection order in the mailbox
	readOnly bool
	rev2     bool // the session enabled IMAP4rev2 before selecting
	// notify gets a token (without blocking) whenever updates are queued;
	// Idle waits on it. Being buffered, a token sent before IDLE starts is
	// still there when it does.
	notify chan struct{}
	// quiet lists the messages of a flag change of the session's own in
	// flight; changes to them are held meanwhile (submitQuiet).
	quiet map[command.ID]bool
	held  []heldChange

	// What may be queued and not written yet. Each FLAGS, EXPUNGE and flag
	// FETCH queued takes the next number qn; a poll writes everything
	// queued before it, or, after a non-UID FETCH, STORE or SEARCH, what
	// comes before the first EXPUNGE (written).
	qn      uint64
	exps    []uint64            // EXPUNGEs
	fetches map[imap.UID]uint64 // the last flag FETCH per message

	// Keyword announcements (keywords.go).
	queued  kwSet
	pending []queuedFlags
	told    kwSet
	shrunk  bool // a poll wrote a FLAGS with fewer keywords than told had

	// \Recent (recent.go): the UIDs recent for this session, increasing;
	// the count last written; whether it may have changed since.
	recent      []imap.UID
	recentSent  uint32
	recentDirty bool

	// unread counts the updates queued since a poll last took them all;
	// past maxUnread the view is flooded: taken out of its mailbox's
	// views, so that nothing more is queued, and its session ends at its
	// next command or poll (endFlooded).
	unread  int
	flooded bool
}

// maxUnread is how many updates may wait for a view, for a mailbox of n
// messages: two changes to each message and 10,000 more. A session that
// selected a mailbox and then sent nothing held every update queued for
// it, about 90 bytes each, until go-imap's 35 minutes without a command
// ran out: another session setting and clearing \Seen on 3,000 messages
// 20 times grew each such session by 11 MB, and did so without end.
func maxUnread(n int) int { return 2*n + 10000 }

// dropFlooded takes the views with more updates waiting than maxUnread
// out of the mailbox's views and wakes them, with mb.mu held. Their
// trackers stay as they are (their sessions still number messages with
// them until they end) and get nothing more.
func (mb *mailbox) dropFlooded() {
	limit := maxUnread(len(mb.uids))
	for st, v := range mb.views {
		if v.unread > limit {
			v.flooded = true
			delete(mb.views, st)
			select {
			case v.notify <- struct{}{}:
			default:
			}
		}
	}
}

// errFlooded ends a session whose view was flooded.
var errFlooded = errors.New("too many updates waited for the session")

// endFlooded ends the session, whose view was flooded, with BYE (RFC 9051
// section 7.1.5): a client that connects again and selects the mailbox
// learns its state afresh.
func (s *session) endFlooded() error {
	s.srv.log.Warn("IMAP session ended: too many updates waited for it", "remote", s.conn.NetConn().RemoteAddr().String())
	nc := s.conn.NetConn()
	if fc := framer(nc); fc != nil {
		fc.reply("* BYE too many changes to the selected mailbox waited for this connection to read them; connect again")
	}
	nc.Close()
	return errFlooded
}

// heldChange is a flag change held back from a view.
type heldChange struct {
	pos   uint64
	uid   imap.UID
	flags []string
}

// Poll implements imapserver.Session: the conn calls it after every
// command that succeeds in the authenticated or selected state.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	mb, v := s.sel.mb, s.sel.v
	mb.mu.Lock()
	if v.flooded {
		mb.mu.Unlock()
		return s.endFlooded()
	}
	n0 := v.qn
	dirty := v.recentDirty && !v.rev2
	if allowExpunge {
		v.recentDirty = false
	}
	mb.mu.Unlock()
	if err := v.st.Poll(w, allowExpunge); err != nil {
		return err
	}
	mb.mu.Lock()
	v.written(n0, allowExpunge)
	if allowExpunge {
		v.unread = 0
	}
	var full []imap.Flag
	if v.shrunk {
		// An older FLAGS from the queue came after the full one the
		// session wrote itself (tell): the client's list shrank. The
		// full one again, so that a FLAGS never shrinks while selected.
		v.shrunk = false
		full = v.queued.flags()
		v.told = v.queued.clone()
	}
	if dirty && !allowExpunge && len(v.exps) > 0 {
		// An EXPUNGE held back: the count is of the messages still
		// here, not of the client's view, which still has the
		// expunged ones. It goes with the EXPUNGEs (recentDirty stays).
		dirty = false
	}
	var recent uint32
	if dirty {
		recent = mb.recentVisible(v)
	}
	mb.mu.Unlock()
	if full != nil {
		if err := w.WriteMailboxFlags(full); err != nil {
			return err
		}
	}
	if dirty && recent != v.recentSent {
		// RFC 3501 section 7.3.2; the library drops it for IMAP4rev2.
		if err := w.WriteNumRecent(recent); err != nil {
			return err
		}
		v.recentSent = recent
	}
	return nil
}

// queueExpunge queues EXPUNGE seq. With the mailbox mutex held.
func (v *view) queueExpunge(seq uint32) {
	v.mt.QueueExpunge(seq)
	v.qn++
	v.unread++
	v.exps = append(v.exps, v.qn)
	v.recentDirty = true
}

// queueFetch queues a flag change of the message at seq (a FLAGS first if
// it shows a new keyword). With the mailbox mutex held.
func (v *view) queueFetch(seq uint32, uid imap.UID, flags []string) {
	v.announce(flags)
	v.mt.QueueMessageFlags(seq, uid, toFlags(v.withRecent(uid, flags)), nil)
	v.qn++
	v.unread++
	v.fetches[uid] = v.qn
}

// written records what a poll that started when v.qn was n0 surely wrote.
// With the mailbox mutex held.
func (v *view) written(n0 uint64, allowExpunge bool) {
	limit := n0
	if allowExpunge {
		k := 0
		for k < len(v.exps) && v.exps[k] <= n0 {
			k++
		}
		v.exps = v.exps[k:]
	} else if len(v.exps) > 0 && v.exps[0] <= n0 {
		limit = v.exps[0] - 1
	}
	for uid, at := range v.fetches {
		if at <= limit {
			delete(v.fetches, uid)
		}
	}
	v.wroteFlags(limit)
}

// Idle implements imapserver.Session. Whatever was queued before IDLE
// (between the client's DONE and this IDLE, say) is written at once, then
// every update as it is queued. imapserver's SessionTracker.Idle would
// only wait for updates queued after it started.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if s.sel == nil {
		<-stop
		return nil
	}
	v := s.sel.v
	for {
		if err := s.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-v.notify:
		case <-stop:
			return nil
		}
	}
}
