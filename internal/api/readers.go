package api

import (
	"context"
	"time"

	"cspool/internal/spool"
)

// noteReadersEvery is how often a server writes, for each user, that a
// read of the user's log said its device reads entry format 3, and logs a
// read that did not.
const noteReadersEvery = time.Hour

// noteOldReadersEvery is how often a server writes, for each user, that a
// read did not say it: other servers on the store learn of an old device
// within this and sealsRecheck.
const noteOldReadersEvery = time.Minute

// noteReaderTimeout bounds noteReader's write to the store.
const noteReaderTimeout = 10 * time.Second

// sealsRecheck is how long SealsVersion3's answer for a user is used
// before the store is asked again.
const sealsRecheck = time.Minute

// noteReader records what a read of user's log says (v3): whether its
// device reads entry format 3 (ReadsParam, sent on every read by devices
// since that format). The store (spool.ReaderFormats) keeps since when
// every read said so, which SealsVersion3 asks: a read saying it sets the
// time if none is set (written at most once an hour for each user), one
// not saying it clears it (at most once a minute). A read not saying it
// also turns SealsVersion3 to no on this server for the next hour,
// whatever other reads say, and is logged once an hour: its device, built
// before format 3, cannot open such entries, so it stops before the first
// (readParams.beyond) and its user sees no newer mail there until it is
// upgraded. This is how an operator sees which users still run such a
// device (docs/OPERATING.md).
func (s *Server) noteReader(ctx context.Context, user string, v3 bool) {
	now := time.Now()
	memo := s.newReaders
	if !v3 {
		s.seals.put(user, false, now)
		// The next read that says it reads format 3 starts the time again.
		s.newReaders.forget(user)
		if s.oldReaders.claim(user, struct{}{}, now) {
			s.log.Info("a device read this user's log without saying it reads entry format 3: one built before it, "+
				"which stops before the first format 3 delivery until upgraded; upgrade cspool there (logged once an hour)",
				"user", user)
		}
		memo = s.oldNoted
	}
	if !memo.claim(user, struct{}{}, now) {
		return
	}
	rf, ok := s.cfg.Store.(spool.ReaderFormats)
	if !ok {
		return
	}
	// A client gone meanwhile does not undo the write.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), noteReaderTimeout)
	defer cancel()
	if err := rf.NoteReader(ctx, user, v3, now); err != nil {
		memo.forget(user) // the next read tries again
		s.log.Warn("recording the entry formats a device reads failed", "user", user, "err", err)
		return
	}
	if v3 {
		s.seals.forget(user)
	}
}

// SealsVersion3 reports whether user's deliveries are to be sealed in
// entry format 3 under --entry-format auto: whether every read of the
// user's log has said, for Config.Version3After at least, that its device
// reads that format (noteReader). No while a read on this server did not
// say it within the hour; else the store's answer, kept for a minute. A
// store that cannot tell, or fails, says no: format 2 is read by every
// device.
func (s *Server) SealsVersion3(ctx context.Context, user string) bool {
	now := time.Now()
	if _, ok := s.oldReaders.get(user, now); ok {
		return false
	}
	if v, ok := s.seals.get(user, now); ok {
		return v
	}
	rf, ok := s.cfg.Store.(spool.ReaderFormats)
	if !ok {
		return false
	}
	since, err := rf.Version3Since(ctx, user)
	if err != nil {
		s.log.Warn("reading the entry formats a user's devices read failed; sealing in format 2", "user", user, "err", err)
		return false
	}
	v := !since.IsZero() && now.Sub(since) >= s.cfg.Version3After
	s.seals.put(user, v, now)
	return v
}
