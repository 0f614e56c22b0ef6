package imapd

import (
	"context"
	"time"

	"cspool/internal/command"
)

// appendingWait bounds how long a SELECT or EXAMINE waits for the
// APPENDs underway into its mailbox: a submit held up by an unreachable
// spool must not hold the mailbox shut.
const appendingWait = 5 * time.Second

// appendStart notes an APPEND into mailbox id underway (its message
// read whole and submitted); the function returned notes its end.
func (s *Server) appendStart(id command.ID) (end func()) {
	done := make(chan struct{})
	s.appendingMu.Lock()
	if s.appending == nil {
		s.appending = map[command.ID]map[chan struct{}]struct{}{}
	}
	if s.appending[id] == nil {
		s.appending[id] = map[chan struct{}]struct{}{}
	}
	s.appending[id][done] = struct{}{}
	s.appendingMu.Unlock()
	return func() {
		s.appendingMu.Lock()
		delete(s.appending[id], done)
		if len(s.appending[id]) == 0 {
			delete(s.appending, id)
		}
		s.appendingMu.Unlock()
		close(done)
	}
}

// waitAppends waits, up to appendingWait, for the APPENDs into mailbox
// id that are underway now (on any connection) to end, so that a client
// whose connection broke before an APPEND's answer finds the message
// when it selects the mailbox again, rather than appending it twice.
// APPENDs begun after the call are not waited for.
func (s *Server) waitAppends(ctx context.Context, id command.ID) {
	s.appendingMu.Lock()
	var underway []chan struct{}
	for ch := range s.appending[id] {
		underway = append(underway, ch)
	}
	s.appendingMu.Unlock()
	if len(underway) == 0 {
		return
	}
	t := time.NewTimer(appendingWait)
	defer t.Stop()
	for _, ch := range underway {
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
