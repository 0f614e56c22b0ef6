package imapd

import (
	"context"
	"slices"
	"sort"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// \Recent (RFC 3501 sections 2.3.2, 6.3.1, 7.3.2; gone from IMAP4rev2): a
// message is recent for the first session that is told of it, and for no
// other. It is per device and lives in memory only, not in the log:
//
//   - Each mailbox has a floor, the highest UID some session has claimed.
//     The floors start, when the server starts, at each mailbox's UIDNext-1
//     (mail already there is not recent); a mailbox created later starts
//     at 0.
//   - SELECT by an IMAP4rev1 session claims every message above the floor:
//     they are recent for it, and the floor moves past them. EXAMINE shows
//     them as recent without claiming them (RFC 3501 section 6.3.2).
//   - A message added while the mailbox is selected is claimed by the
//     IMAP4rev1 read-write session that selected it first; if there is
//     none, it is recent for every IMAP4rev1 EXAMINE session and stays
//     above the floor for the next SELECT.
//   - A session that enabled IMAP4rev2 before SELECT neither sees nor
//     claims \Recent.
//
// A session gets "* N RECENT" with SELECT/EXAMINE and whenever the number
// of recent messages it can see changes (with EXISTS, after EXPUNGE); FETCH
// FLAGS shows \Recent; SEARCH RECENT, NEW and OLD use it; STATUS RECENT
// counts the messages above the floor.

// recentFloor returns the highest UID of mailbox id claimed as recent.
func (s *Server) recentFloor(id command.ID) imap.UID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.floors[id]
}

// claimRecent moves the floor of mailbox id up to uid.
func (s *Server) claimRecent(id command.ID, uid imap.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.floors[id] = max(s.floors[id], uid)
}

// loadFloors sets every mailbox's floor at its UIDNext-1.
func (s *Server) loadFloors(ctx context.Context) error {
	mbs, err := s.cfg.Store.MailboxIdentities(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, mb := range mbs {
		s.floors[mb.ID] = imap.UID(mb.UIDNext - 1)
	}
	return nil
}

// openRecent gives a new view the messages above the floor, and claims
// them for a read-write one. With mb.mu held.
func (mb *mailbox) openRecent(v *view) {
	if v.rev2 {
		return
	}
	floor := mb.srv.recentFloor(mb.id)
	k := sort.Search(len(mb.uids), func(i int) bool { return mb.uids[i] > floor })
	v.recent = slices.Clone(mb.uids[k:])
	v.recentSent = uint32(len(v.recent))
	if !v.readOnly && len(v.recent) > 0 {
		mb.srv.claimRecent(mb.id, v.recent[len(v.recent)-1])
	}
}

// addRecent makes a new message recent for the view that claims it, or for
// the EXAMINE views when no view claims it. With mb.mu held.
func (mb *mailbox) addRecent(uid imap.UID) {
	var claimant *view
	for _, v := range mb.views {
		if !v.rev2 && !v.readOnly && (claimant == nil || v.serial < claimant.serial) {
			claimant = v
		}
	}
	if claimant != nil {
		claimant.recent = append(claimant.recent, uid)
		mb.srv.claimRecent(mb.id, uid)
		return
	}
	for _, v := range mb.views {
		if !v.rev2 {
			v.recent = append(v.recent, uid)
		}
	}
}

// dropRecent forgets an expunged message. With mb.mu held.
func (mb *mailbox) dropRecent(uid imap.UID) {
	for _, v := range mb.views {
		if k, ok := slices.BinarySearch(v.recent, uid); ok {
			v.recent = slices.Delete(v.recent, k, k+1)
		}
	}
}

// isRecent reports whether uid is recent for the view. With mb.mu held.
func (v *view) isRecent(uid imap.UID) bool {
	_, ok := slices.BinarySearch(v.recent, uid)
	return ok
}

// withRecent returns flags with \Recent added when uid is recent for the
// view. With mb.mu held.
func (v *view) withRecent(uid imap.UID, flags []string) []string {
	if !v.isRecent(uid) {
		return flags
	}
	return append(slices.Clip(flags), `\Recent`)
}

// recentVisible counts the view's recent messages the client can see.
// With mb.mu held.
func (mb *mailbox) recentVisible(v *view) uint32 {
	var n uint32
	for _, u := range v.recent {
		if k, ok := mb.find(u); ok && v.st.EncodeSeqNum(uint32(k+1)) != 0 {
			n++
		}
	}
	return n
}

// showRecent adds \Recent to flags when uid is recent for the session.
func (s *session) showRecent(uid imap.UID, flags []string) []string {
	mb, v := s.sel.mb, s.sel.v
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return v.withRecent(uid, flags)
}

// fetchFlags returns flags as a FETCH shows them for uid (showRecent),
// and whether the client's FLAGS lacks one of their keywords, so that
// tell must write FLAGS before the FETCH response: one lock for both.
func (s *session) fetchFlags(uid imap.UID, flags []string) ([]string, bool) {
	mb, v := s.sel.mb, s.sel.v
	mb.mu.Lock()
	defer mb.mu.Unlock()
	flags = v.withRecent(uid, flags)
	return flags, v.told.missing(flags)
}

// recentSet returns, for SEARCH, whether a UID is recent for the session.
func (s *session) recentSet() func(imap.UID) bool {
	mb, v := s.sel.mb, s.sel.v
	mb.mu.Lock()
	set := slices.Clone(v.recent)
	mb.mu.Unlock()
	return func(uid imap.UID) bool {
		_, ok := slices.BinarySearch(set, uid)
		return ok
	}
}

// statusRecent counts the messages of mb above its floor (STATUS RECENT).
func (s *session) statusRecent(ctx context.Context, mb *mailstore.Mailbox) (uint32, error) {
	floor := s.srv.recentFloor(mb.ID)
	if floor+1 >= imap.UID(mb.UIDNext) {
		return 0, nil
	}
	var n uint32
	err := s.store().Fetch(ctx, mb.ID, mailstore.UIDSet{{Start: mailstore.UID(floor + 1), Stop: mb.UIDNext - 1}}, 0, func(*mailstore.Message) error {
		n++
		return nil
	})
	return n, err
}
