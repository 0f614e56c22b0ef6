package api

import (
	"context"
	"time"

	"cspool/internal/entry"
	"cspool/internal/spool"
)

// noteReadersEvery is how often a server writes, for each user, that a
// read of the user's log said its device reads every entry format, and
// logs a read that did not.
const noteReadersEvery = time.Hour

// noteOldReadersEvery is how often a server writes, for each user, that a
// read did not say it: other servers on the store learn of an old device
// within this and sealsRecheck.
const noteOldReadersEvery = time.Minute

// noteReaderTimeout bounds noteReader's write to the store.
const noteReaderTimeout = 10 * time.Second

// sealsRecheck is how long ReadersFormat's answer from the store for a
// user is used before the store is asked again.
const sealsRecheck = time.Minute

// HeaderReaders, on a device's read of its log, is ReadersFormat: the
// newest entry format every device of the user has read for
// Config.NewFormatsAfter (docs/API.md §3). From 4 a device writes the
// commands of version 2 that format 4 carries; below, the earlier
// versions every device applies.
const HeaderReaders = "Cspool-Readers"

// readerLevel is the newest entry format a device reads, from what its
// read says (readsUpTo): entry.Version for one of a release before format
// 3, which says nothing; at most entry.Newest, the newest this server
// knows.
func readerLevel(reads int) int {
	return max(entry.Version, min(reads, entry.Newest))
}

// noteReader records what a read of user's log says (ReadsParam, sent on
// every read by devices since format 3): the formats its device reads.
// The store (spool.ReaderFormats) keeps since when every read said it
// reads format 3, and format 4, which ReadersFormat asks: a read saying
// all this server knows is written at most once an hour for each user,
// one saying less at most once a minute. A read saying less also caps
// ReadersFormat on this server for the next hour, whatever other reads
// say, and is logged once an hour: its device cannot open the newer
// entries, so it stops before the first (readParams.beyond) and its user
// sees no newer mail there until it is upgraded. This is how an operator
// sees which users still run such a device (docs/OPERATING.md).
func (s *Server) noteReader(ctx context.Context, user string, reads int) {
	level := readerLevel(reads)
	now := time.Now()
	memo := s.newReaders
	if level < entry.Newest {
		// The next read that says all starts the time again.
		s.newReaders.forget(user)
		if lowerMemo(s.oldReaders, user, level, now) {
			s.logOldReader(user, level)
		}
		if !lowerMemo(s.oldNoted, user, level, now) {
			return
		}
	} else if !memo.claim(user, struct{}{}, now) {
		return
	}
	rf, ok := s.cfg.Store.(spool.ReaderFormats)
	if !ok {
		return
	}
	// A client gone meanwhile does not undo the write.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), noteReaderTimeout)
	defer cancel()
	forget := func() {
		if level < entry.Newest {
			s.oldNoted.forget(user) // the next read tries again
		} else {
			memo.forget(user)
		}
	}
	exists, err := rf.NoteReader(ctx, user, level, now)
	if err != nil {
		forget()
		s.log.Warn("recording the entry formats a device reads failed", "user", user, "err", err)
		return
	}
	if !exists {
		// No log yet: nothing recorded. The next read records what it
		// says once the first append has made the log (an old device
		// set up before its user's first mail).
		forget()
		return
	}
	if level == entry.Newest {
		s.seals.forget(user)
	}
}

// logOldReader logs a read by a device that does not read every format.
func (s *Server) logOldReader(user string, level int) {
	if level < entry.Version3 {
		s.log.Info("a device read this user's log without saying it reads entry format 3: one built before it, "+
			"which stops before the first format 3 delivery until upgraded; upgrade cspool there (logged once an hour)",
			"user", user)
		return
	}
	s.log.Info("a device read this user's log saying it reads entry formats up to 3: one built before format 4, "+
		"which stops before the first EXPUNGE or DELETE written in it until upgraded, so this user's devices write them "+
		"by the earlier rule meanwhile; upgrade cspool there (logged once an hour)",
		"user", user)
}

// lowerMemo puts level for user in m unless a level at most as high was
// put less than m's age before now, and reports whether it did.
func lowerMemo(m *userMemo[int], user string, level int, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.m[user]; ok && now.Sub(e.at) < m.age && e.v <= level {
		return false
	}
	m.putLocked(user, level, now)
	return true
}

// ReadersFormat reports the newest entry format every read of user's log
// has said, for Config.NewFormatsAfter at least, that its device reads
// (noteReader): entry.Version when none newer. At most the lowest a read
// on this server said within the hour; else the store's answer, kept for
// a minute. A store that cannot tell, or fails, says entry.Version: read
// by every device.
//
// A log made by a store of this release has every read recorded from its
// start (spool.ReaderFormats), so its user's devices need not wait.
func (s *Server) ReadersFormat(ctx context.Context, user string) int {
	now := time.Now()
	top := entry.Newest
	if low, ok := s.oldReaders.get(user, now); ok {
		top = low
	}
	if v, ok := s.seals.get(user, now); ok {
		return min(v, top)
	}
	rf, ok := s.cfg.Store.(spool.ReaderFormats)
	if !ok {
		return entry.Version
	}
	since, err := rf.ReadersSince(ctx, user)
	if err != nil {
		s.log.Warn("reading the entry formats a user's devices read failed; taking format 2", "user", user, "err", err)
		return entry.Version
	}
	held := func(t time.Time) bool { return !t.IsZero() && now.Sub(t) >= s.cfg.NewFormatsAfter }
	v := entry.Version
	switch {
	case held(since.Format3) && held(since.Format4):
		v = entry.Version4
	case held(since.Format3):
		v = entry.Version3
	}
	s.seals.put(user, v, now)
	return min(v, top)
}

// SealsVersion3 reports whether user's deliveries are to be sealed in
// entry format 3 under --entry-format auto: whether ReadersFormat is 3 or
// newer.
func (s *Server) SealsVersion3(ctx context.Context, user string) bool {
	return s.ReadersFormat(ctx, user) >= entry.Version3
}
