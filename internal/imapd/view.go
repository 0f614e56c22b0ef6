package imapd

import (
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
	readOnly bool
	// notify gets a token (without blocking) whenever updates are queued;
	// Idle waits on it. Being buffered, a token sent before IDLE starts is
	// still there when it does.
	notify chan struct{}
	// quiet lists messages whose next flag change this session made
	// itself and reports on its own.
	quiet map[command.ID]bool

	// Keyword announcements (keywords.go).
	queued   kwSet
	pending  []queuedFlags
	expunges int // EXPUNGEs queued that a poll may not have written yet
	told     kwSet
}

// Poll implements imapserver.Session: the conn calls it after every
// command that succeeds in the authenticated or selected state.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	mb, v := s.sel.mb, s.sel.v
	mb.mu.Lock()
	n, exps := len(v.pending), v.expunges
	mb.mu.Unlock()
	if err := v.st.Poll(w, allowExpunge); err != nil {
		return err
	}
	mb.mu.Lock()
	v.polled(n, exps, allowExpunge)
	mb.mu.Unlock()
	return nil
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
