package imapd

import (
	"cmp"
	"context"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// mailbox is the in-memory state of a mailbox selected now or before (or
// INBOX, loaded when the server starts): its UID list (the server view of
// sequence numbers) and one view per session that selects it, in
// lock-step under mu. It stays loaded, kept up to date by Applied, when
// its last session leaves, so a SELECT does not read the mailbox's UIDs
// again (1,000,000 of them take half a second or more). Beside each UID
// it keeps the message's flags, size and internal date (the listing), so
// a FETCH of UID, FLAGS, INTERNALDATE and RFC822.SIZE reads no SQLite
// (fetchListed); with the UID it costs 20 bytes a message.
type mailbox struct {
	id   command.ID
	srv  *Server
	refs int // sessions using it; guarded by Server.mu

	// changes orders the changes sessions on this device make to the
	// mailbox's messages with the EXPUNGEs: an EXPUNGE holds it from the
	// read of which messages have \Deleted until its command is applied,
	// a MOVE (of messages here) or a STORE that may take \Deleted off
	// shares it while it resolves its messages and submits. The Expunge command names ids,
	// and the store removes them wherever they are then, whatever their
	// flags (docs/MAILSTORE.md): a MOVE of a \Deleted message, or a
	// STORE -FLAGS (\Deleted) on it, made by another session between
	// that read and the apply was answered OK, and the message was
	// expunged after all, from where it had been moved to.
	changes sync.RWMutex

	mu     sync.Mutex
	loaded bool
	pos    uint64     // store position the loaded list reflects
	uids   []imap.UID // increasing; sequence number n is uids[n-1]
	// The listing, parallel to uids: message k's flags are
	// lists[flags[k]] (shared, never written), its RFC822.SIZE sizes[k]
	// (unknownSize: read it from the store) and its internal date
	// dates[k] in Unix milliseconds.
	flags   []uint32
	sizes   []uint32
	dates   []int64
	lists   [][]string
	listAt  map[string]uint32 // lists by their flags joined by spaces
	uidNext imap.UID          // the UIDNEXT the list reflects (STATUS)
	uidVal  uint32            // the UIDVALIDITY it was loaded with
	deleted bool              // the mailbox was deleted while selected
	renewed bool              // deleted: made again with another UIDVALIDITY
	views   map[*imapserver.SessionTracker]*view
	serial  uint64 // views opened so far
	// steps counts the messages and ranges walked matching sets to the
	// list (refsFromLocked), for the tests of that cost.
	steps int
}

// load reads the UID list with the listing and the position they reflect,
// once: all of one snapshot, so changes after it are those Applied brings
// with a later position.
func (mb *mailbox) load(ctx context.Context, st *mailstore.Store) error {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.loaded {
		return nil
	}
	l, pos, err := st.ListingAt(ctx, mb.id)
	if err != nil {
		return err
	}
	mb.setListing(l, pos)
	return nil
}

// setListing makes l, of store position pos, the mailbox's UID list and
// listing, with mb.mu held.
func (mb *mailbox) setListing(l *mailstore.Listing, pos uint64) {
	mb.uids, mb.pos, mb.loaded = imapUIDs(l.UIDs), pos, true
	mb.uidNext, mb.uidVal = imap.UID(l.UIDNext), l.UIDValidity
	mb.flags, mb.sizes, mb.dates, mb.lists = l.Flags, l.Sizes, l.Dates, l.Lists
	mb.listAt = make(map[string]uint32, len(l.Lists))
	for n, list := range l.Lists {
		mb.listAt[strings.Join(list, " ")] = uint32(n)
	}
	mb.views = map[*imapserver.SessionTracker]*view{}
}

// find returns the index of uid in the list.
func (mb *mailbox) find(uid imap.UID) (int, bool) {
	return slices.BinarySearch(mb.uids, uid)
}

// apply turns one mailbox's changes (in apply order) into updates queued
// for every view, and wakes the idling ones. It reports whether the
// mailbox is deleted for its sessions.
func (mb *mailbox) apply(changes []mailstore.Change) (deleted bool) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if !mb.loaded || mb.deleted {
		return mb.deleted
	}
	defer mb.wake()
	defer mb.dropFlooded()
	return mb.applyRun(changes)
}

// applyRun is apply with mb.mu held.
func (mb *mailbox) applyRun(changes []mailstore.Change) (deleted bool) {
	for i := 0; i < len(changes); i++ {
		c := changes[i]
		if c.Pos <= mb.pos {
			continue // already in the loaded list
		}
		switch c.Kind {
		case mailstore.MessageAdded:
			if n := len(mb.uids); n > 0 && mb.uids[n-1] >= imap.UID(c.UID) {
				continue
			}
			mb.uids = append(mb.uids, imap.UID(c.UID))
			mb.uidNext = max(mb.uidNext, imap.UID(c.UID)+1)
			// The size and date are read at the first FETCH that
			// needs them (they never change).
			mb.flags = append(mb.flags, mb.intern(c.Flags))
			mb.sizes = append(mb.sizes, unknownSize)
			mb.dates = append(mb.dates, 0)
			mb.addRecent(imap.UID(c.UID))
			for _, v := range mb.views {
				v.mt.QueueNumMessages(uint32(len(mb.uids)))
				v.recentDirty = true
				v.unread++
			}
		case mailstore.MessageExpunged:
			// A run of expunges is announced from the highest sequence
			// number down, so each number is valid when queued, and the
			// list is compacted once.
			j := i
			for j < len(changes) && changes[j].Kind == mailstore.MessageExpunged && changes[j].Pos > mb.pos {
				j++
			}
			mb.expunge(changes[i:j])
			i = j - 1
		case mailstore.FlagsChanged:
			k, ok := mb.find(imap.UID(c.UID))
			if !ok {
				continue
			}
			mb.flags[k] = mb.intern(c.Flags)
			for _, v := range mb.views {
				if v.quiet[c.Message] {
					// Held while the session's own change is in flight
					// (submitQuiet).
					v.held = append(v.held, heldChange{c.Pos, imap.UID(c.UID), c.Flags})
					continue
				}
				v.queueFetch(uint32(k+1), imap.UID(c.UID), c.Flags)
			}
		case mailstore.MailboxDeleted:
			// Made again at once (a new UIDVALIDITY on this device), or
			// gone.
			mb.gone(slices.ContainsFunc(changes[i+1:], func(c mailstore.Change) bool { return c.Kind == mailstore.MailboxCreated }))
			return true
		case mailstore.MailboxRestored:
			if !mb.restored(c.Pos) {
				return mb.applyRun([]mailstore.Change{{Kind: mailstore.MailboxDeleted, Pos: c.Pos, Mailbox: c.Mailbox, Name: c.Name}})
			}
			i = len(changes) // the listing holds what follows
		}
	}
	return false
}

// gone tells every view that the mailbox was deleted (each message
// expunged) and marks it deleted, and renewed when it was made again with
// another UIDVALIDITY, with mb.mu held.
func (mb *mailbox) gone(renewed bool) {
	for n := len(mb.uids); n > 0; n-- {
		for _, v := range mb.views {
			v.queueExpunge(uint32(n))
		}
	}
	for _, v := range mb.views {
		v.recent, v.recentDirty = nil, true
	}
	mb.uids, mb.flags, mb.sizes, mb.dates = nil, nil, nil, nil
	mb.deleted, mb.renewed = true, renewed
}

// restoredRun is how many changes restored hands applyRun at a time.
const restoredRun = 4096

// restored brings the mailbox to its listing in the store after a restore
// at pos replaced more of its messages than the restore lists
// (mailstore.MailboxRestored), with mb.mu held. With no session showing
// it, it takes the listing as it is; else the UIDs the listing no longer
// holds are expunged, those it holds after the last one shown are added,
// and changed flags are fetched, as the restore's own changes would have
// been told, restoredRun at a time. It reports false if the listing could
// not be read, or is of another UIDVALIDITY: the mailbox is then told as
// deleted.
func (mb *mailbox) restored(pos uint64) bool {
	l, at, err := mb.srv.cfg.Store.ListingAt(mb.srv.ctx, mb.id)
	if err != nil {
		mb.srv.log.Warn("reading a restored mailbox's listing; its sessions are told it is deleted", "err", err)
		return false
	}
	if l.UIDValidity != mb.uidVal {
		// Made again since with another UIDVALIDITY: its UIDs are not
		// the ones shown.
		return false
	}
	if len(mb.views) == 0 {
		mb.setListing(l, at)
		return true
	}
	var run []mailstore.Change
	push := func(c mailstore.Change) {
		c.Pos, c.Mailbox = pos, mb.id
		run = append(run, c)
		if len(run) == restoredRun {
			mb.applyRun(run)
			run = run[:0]
		}
	}
	var gone []imap.UID
	for _, u := range mb.uids {
		if _, ok := slices.BinarySearch(l.UIDs, mailstore.UID(u)); !ok {
			gone = append(gone, u)
		}
	}
	for _, u := range gone {
		push(mailstore.Change{Kind: mailstore.MessageExpunged, UID: mailstore.UID(u)})
	}
	mb.applyRun(run)
	run = run[:0]
	// Every UID shown is now in the listing, in the same order.
	k, shown := 0, len(mb.uids)
	for i, u := range l.UIDs {
		flags := l.Lists[l.Flags[i]]
		switch {
		case k < shown && imap.UID(u) == mb.uids[k]:
			if !slices.Equal(mb.lists[mb.flags[k]], flags) {
				push(mailstore.Change{Kind: mailstore.FlagsChanged, UID: u, Flags: flags})
			}
			k++
		case shown == 0 || imap.UID(u) > mb.uids[shown-1]:
			push(mailstore.Change{Kind: mailstore.MessageAdded, UID: u, Flags: flags})
		}
	}
	mb.applyRun(run)
	mb.pos = max(mb.pos, at)
	return true
}

// wake tells every idling view that updates are queued, with mb.mu held.
func (mb *mailbox) wake() {
	for _, v := range mb.views {
		select {
		case v.notify <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

func (mb *mailbox) expunge(run []mailstore.Change) {
	var idx []int
	for _, c := range run {
		if k, ok := mb.find(imap.UID(c.UID)); ok {
			idx = append(idx, k)
			mb.dropRecent(imap.UID(c.UID))
		}
	}
	if len(idx) == 0 {
		return
	}
	sort.Sort(sort.Reverse(sort.IntSlice(idx)))
	idx = slices.Compact(idx)
	gone := make(map[int]bool, len(idx))
	for _, k := range idx {
		for _, v := range mb.views {
			v.queueExpunge(uint32(k + 1))
		}
		gone[k] = true
	}
	n := 0
	for k := range mb.uids {
		if !gone[k] {
			mb.uids[n], mb.flags[n], mb.sizes[n], mb.dates[n] = mb.uids[k], mb.flags[k], mb.sizes[k], mb.dates[k]
			n++
		}
	}
	mb.uids, mb.flags, mb.sizes, mb.dates = mb.uids[:n], mb.flags[:n], mb.sizes[:n], mb.dates[:n]
}

// unknownSize in mailbox.sizes: the size is read from the store (a
// message added since the load, or of 4 GiB or more).
const unknownSize = mailstore.UnlistedSize

func packSize(n int64) uint32 {
	if n < 0 || n >= int64(unknownSize) {
		return unknownSize
	}
	return uint32(n)
}

// intern returns the number of flags' list in mb.lists, adding a copy if
// it is new. With mb.mu held.
func (mb *mailbox) intern(flags []string) uint32 {
	key := strings.Join(flags, " ")
	if n, ok := mb.listAt[key]; ok {
		return n
	}
	n := uint32(len(mb.lists))
	mb.lists = append(mb.lists, slices.Clip(slices.Clone(flags)))
	mb.listAt[key] = n
	return n
}

// ref is a message a command acts on: its UID and its sequence number in
// the client's view.
type ref struct {
	uid imap.UID
	seq uint32
}

// star returns what * stands for in the client's view (RFC 9051 section
// 9, seq-number and uid): the highest sequence number the client knows
// of, and the UID of its last message. With mb.mu held. known is how many
// messages the client was told of (frameConn.knownMessages; -1: not
// known). When the client's last messages were expunged and it has not
// been told yet, * is the last of them: its number, and for a UID one
// above every message the client still sees, which names none of them.
// It was the last message still in the mailbox: STORE * or UID STORE n:*
// acted on a message the client had not named, and UID EXPUNGE n:* could
// remove it.
func (mb *mailbox) star(st *imapserver.SessionTracker, known int64) (uint32, imap.UID) {
	var c uint32
	var u imap.UID
	for s := len(mb.uids); s > 0; s-- {
		if x := st.EncodeSeqNum(uint32(s)); x != 0 {
			c, u = x, mb.uids[s-1]
			break
		}
	}
	if known > int64(c) {
		return uint32(min(known, int64(^uint32(0)))), u + 1
	}
	return c, u
}

// resolve returns the messages of set visible to the client, in UID order.
// A SEARCHRES set ($) is resolved against saved; known is what star takes.
// A set of a few numbers without * is looked up number by number; any
// other is made sorted and disjoint once (refSetOf) and walked beside the
// mailbox's messages (refsFrom): a set of thousands of ranges with * was
// tested range by range against each message, 7,594 ranges over 20,000
// messages in 0.15 to 0.6 s, and a UID set of ranges that overlap walked
// the messages once for each.
func (mb *mailbox) resolve(st *imapserver.SessionTracker, known int64, set imap.NumSet, saved []imap.UID) []ref {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if set, ok := set.(imap.SeqSet); ok && small(set, len(mb.uids)) {
		var out []ref
		for _, r := range set {
			lo, hi := min(r.Start, r.Stop), max(r.Start, r.Stop)
			for c := lo; c <= hi && c != 0; c++ {
				s := st.DecodeSeqNum(c)
				if s != 0 && int(s) <= len(mb.uids) && st.EncodeSeqNum(s) == c {
					out = append(out, ref{mb.uids[s-1], c})
				}
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].uid < out[j].uid })
		return slices.CompactFunc(out, func(a, b ref) bool { return a.uid == b.uid })
	}
	rs := mb.refSetLocked(st, known, set, saved)
	if rs.all {
		return nil // neither a UID nor a sequence set
	}
	return mb.refsFromLocked(st, rs, 0, nil, len(mb.uids))
}

// small reports whether set has no * and fewer numbers than a scan of n
// messages would visit.
func small(set imap.SeqSet, n int) bool {
	total := 0
	for _, r := range set {
		if r.Start == 0 || r.Stop == 0 {
			return false
		}
		total += int(max(r.Start, r.Stop)-min(r.Start, r.Stop)) + 1
		if total > n {
			return false
		}
	}
	return true
}

// span returns the numbers a range from start to stop covers, lowest
// first, * (0) standing for last, the highest (RFC 9051 section 9,
// seq-range).
func span[N ~uint32](start, stop, last N) (lo, hi N) {
	if start == 0 {
		start = last
	}
	if stop == 0 {
		stop = last
	}
	return min(start, stop), max(start, stop)
}

// bounds returns what * stands for in SEARCH (star).
func (mb *mailbox) bounds(st *imapserver.SessionTracker, known int64) (uint32, imap.UID) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.star(st, known)
}

// count returns how many messages the mailbox holds.
func (mb *mailbox) count() int {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return len(mb.uids)
}

// submitQuiet submits a flag change of the session's own, which it
// reports itself (or not, for .SILENT): the changes to those messages
// applied meanwhile are held back from its view; once the outcome is
// known, those made by other entries are queued after all, with the
// message's latest flags.
func (s *session) submitQuiet(sel *selected, cmd *command.Command) (*mailstore.Outcome, error) {
	mb, v := sel.mb, sel.v
	mb.mu.Lock()
	for _, id := range cmd.IDs {
		v.quiet[id] = true
	}
	mb.mu.Unlock()
	o, err := s.submit(cmd)
	var own uint64
	if o != nil {
		own = o.Pos
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	clear(v.quiet)
	latest := map[imap.UID][]string{}
	others := map[imap.UID]bool{}
	var order []imap.UID
	for _, h := range v.held {
		if _, ok := latest[h.uid]; !ok {
			order = append(order, h.uid)
		}
		latest[h.uid] = h.flags
		if h.pos != own {
			others[h.uid] = true
		}
	}
	woke := false
	for _, uid := range order {
		// Its own change is not queued back to it, unless a flag change
		// queued earlier may still be unwritten: that one, written after
		// the session's own answer, would leave older flags showing.
		_, stale := v.fetches[uid]
		if k, ok := mb.find(uid); ok && (others[uid] || stale) {
			v.queueFetch(uint32(k+1), uid, latest[uid])
			woke = true
		}
	}
	if woke {
		mb.wake()
	}
	v.held = v.held[:0]
	return o, err
}

// open starts a session's view of the mailbox, with its tracker at the
// current count, and returns the count. keywords are those the client is
// told with SELECT's FLAGS. The view is not opened when the mailbox was
// deleted, or when its listing is of another UIDVALIDITY than
// uidValidity, the store's (stale: see Server.retire); the caller closes
// it then.
func (mb *mailbox) open(readOnly, rev2 bool, keywords []string, uidValidity uint32) (v *view, n, firstUnseen uint32, deleted, stale bool) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	n = uint32(len(mb.uids))
	if !rev2 {
		firstUnseen = mb.firstUnseen()
	}
	mt := imapserver.NewMailboxTracker(n)
	mb.serial++
	v = &view{mt: mt, st: mt.NewSession(), serial: mb.serial, readOnly: readOnly, rev2: rev2,
		notify: make(chan struct{}, 1), quiet: map[command.ID]bool{}, fetches: map[imap.UID]uint64{},
		queued: newKwSet(keywords), told: newKwSet(keywords)}
	stale = !mb.deleted && mb.uidVal != uidValidity
	if !mb.deleted && !stale {
		mb.openRecent(v)
		mb.views[v.st] = v
	}
	return v, n, firstUnseen, mb.deleted, stale
}

// firstUnseen returns the sequence number of the first message without
// \Seen, 0 if there is none, with mb.mu held: SELECT's OK [UNSEEN n],
// which RFC 3501 section 6.3.1 requires of an IMAP4rev1 server (RFC 9051
// dropped it). It reads the listing in memory: a pass over the flags'
// list numbers, about a millisecond for a million messages.
func (mb *mailbox) firstUnseen() uint32 {
	if len(mb.flags) != len(mb.uids) {
		return 0 // no listing loaded
	}
	seen := make([]bool, len(mb.lists))
	for i, l := range mb.lists {
		seen[i] = slices.Contains(l, string(imap.FlagSeen))
	}
	for k, f := range mb.flags {
		if !seen[f] {
			return uint32(k + 1)
		}
	}
	return 0
}

func (mb *mailbox) close(v *view) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	delete(mb.views, v.st)
	v.st.Close()
}

// isDeleted reports whether the mailbox is gone for its sessions, and
// whether it was made again with another UIDVALIDITY.
func (mb *mailbox) isDeleted() (deleted, renewed bool) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.deleted, mb.renewed
}

// findRef returns the entry of refs (sorted by UID) for uid.
func findRef(refs []ref, uid imap.UID) (ref, bool) {
	k := sort.Search(len(refs), func(i int) bool { return refs[i].uid >= uid })
	if k < len(refs) && refs[k].uid == uid {
		return refs[k], true
	}
	return ref{}, false
}

// refSet is the messages a command names, resolved against the mailbox a
// block at a time (refsFrom) instead of into a ref each at its start: a
// UID FETCH 1:* of a million messages would hold 8 MB of them. Its ranges
// are sorted and disjoint, with * resolved when it was made; the client's
// view does not change during a command (no update is written to it
// meanwhile), so a block resolved later gives each message the sequence
// number a resolution at the start would have, and leaves out those
// expunged since, as a FETCH of them finds them gone from the store.
type refSet struct {
	all  bool            // every message visible to the client
	uids []imap.UIDRange // a UID set
	seqs []imap.SeqRange // a sequence set, of client sequence numbers
	// lastUID is the highest UID the set may name: for a store read's
	// span.
	lastUID imap.UID
}

// refSetOf resolves * and $ in set (a SEARCHRES set against saved) and
// returns it as a refSet.
func (mb *mailbox) refSetOf(st *imapserver.SessionTracker, known int64, set imap.NumSet, saved []imap.UID) *refSet {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.refSetLocked(st, known, set, saved)
}

// refSetLocked is refSetOf with mb.mu held.
func (mb *mailbox) refSetLocked(st *imapserver.SessionTracker, known int64, set imap.NumSet, saved []imap.UID) *refSet {
	rs := &refSet{}
	max, last := mb.star(st, known)
	rs.lastUID = last
	if imap.IsSearchRes(set) {
		var us imap.UIDSet
		for _, u := range saved {
			us.AddNum(u)
		}
		set = us
	}
	switch set := set.(type) {
	case imap.UIDSet:
		for _, r := range set {
			lo, hi := span(r.Start, r.Stop, last)
			rs.uids = append(rs.uids, imap.UIDRange{Start: lo, Stop: hi})
		}
		rs.uids = mergeRanges(rs.uids, func(r imap.UIDRange) (imap.UID, imap.UID) { return r.Start, r.Stop },
			func(lo, hi imap.UID) imap.UIDRange { return imap.UIDRange{Start: lo, Stop: hi} })
		if len(rs.uids) == 0 {
			rs.uids = []imap.UIDRange{}
		} else {
			rs.lastUID = min(last, rs.uids[len(rs.uids)-1].Stop)
		}
	case imap.SeqSet:
		for _, r := range set {
			lo, hi := span(r.Start, r.Stop, max)
			rs.seqs = append(rs.seqs, imap.SeqRange{Start: lo, Stop: hi})
		}
		rs.seqs = mergeRanges(rs.seqs, func(r imap.SeqRange) (uint32, uint32) { return r.Start, r.Stop },
			func(lo, hi uint32) imap.SeqRange { return imap.SeqRange{Start: lo, Stop: hi} })
		if len(rs.seqs) == 0 {
			rs.seqs = []imap.SeqRange{}
		} else if hi := int(rs.seqs[len(rs.seqs)-1].Stop); hi < len(mb.uids) {
			// The message the client numbers hi is the hi-th here or
			// before it (the expunges it was not told of yet come
			// before it, the messages it was not told of after it).
			rs.lastUID = min(last, mb.uids[hi-1])
		}
	default:
		rs.all = true
	}
	return rs
}

// mergeRanges sorts ranges (lo <= hi each) and merges those that overlap
// or touch.
func mergeRanges[R any, N ~uint32](rs []R, ends func(R) (N, N), make func(lo, hi N) R) []R {
	slices.SortFunc(rs, func(a, b R) int {
		la, _ := ends(a)
		lb, _ := ends(b)
		return cmp.Compare(la, lb)
	})
	out := rs[:0]
	for _, r := range rs {
		lo, hi := ends(r)
		if n := len(out); n > 0 {
			plo, phi := ends(out[n-1])
			if uint64(lo) <= uint64(phi)+1 {
				out[n-1] = make(plo, max(phi, hi))
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// refsFrom appends to buf, up to its capacity, the messages of rs with a
// UID of from or more that the client sees, in UID order, and returns it.
func (mb *mailbox) refsFrom(st *imapserver.SessionTracker, rs *refSet, from imap.UID, buf []ref) []ref {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.refsFromLocked(st, rs, from, buf, cap(buf))
}

// refsFromLocked is refsFrom with mb.mu held, appending up to limit refs
// to buf (whatever its capacity). Each message visited and each range
// passed counts a step in mb.steps.
func (mb *mailbox) refsFromLocked(st *imapserver.SessionTracker, rs *refSet, from imap.UID, buf []ref, limit int) []ref {
	k, _ := mb.find(from)
	r := 0
	for k < len(mb.uids) && len(buf) < limit {
		mb.steps++
		u := mb.uids[k]
		if rs.uids != nil {
			for r < len(rs.uids) && rs.uids[r].Stop < u {
				r++
				mb.steps++
			}
			if r == len(rs.uids) {
				break
			}
			if u < rs.uids[r].Start {
				j, _ := slices.BinarySearch(mb.uids[k:], rs.uids[r].Start)
				k += j
				continue
			}
		}
		c := st.EncodeSeqNum(uint32(k + 1))
		k++
		if c == 0 {
			continue
		}
		if rs.seqs != nil {
			for r < len(rs.seqs) && rs.seqs[r].Stop < c {
				r++
				mb.steps++
			}
			if r == len(rs.seqs) {
				break
			}
			if c < rs.seqs[r].Start {
				continue
			}
		}
		buf = append(buf, ref{u, c})
	}
	return buf
}

// refCursor finds the refs of a refSet by UID as the store's rows come,
// a block at a time: UIDs asked for in ascending order cost a step each,
// and a UID the block does not cover gets the block that starts at it.
// The block grows while it is used to its end and shrinks again after a
// jump, so a sparse lookup copies little. With mb nil, it finds in refs
// alone (a fixed list, sorted by UID).
type refCursor struct {
	mb   *mailbox
	st   *imapserver.SessionTracker
	set  *refSet
	refs []ref
	k    int // refs[:k] are below the UID asked for last
	// The block holds every ref of the set from UID from up to its last
	// (to the set's end when end); filled says there is a block.
	from   imap.UID
	end    bool
	filled bool
	buf    []ref
}

// Block sizes of a refCursor.
const (
	minRefBlock = 32
	maxRefBlock = 1024
)

func newRefCursor(mb *mailbox, st *imapserver.SessionTracker, set *refSet) *refCursor {
	return &refCursor{mb: mb, st: st, set: set}
}

// covers reports whether the block says whether uid is in the set.
func (c *refCursor) covers(uid imap.UID) bool {
	switch {
	case c.mb == nil:
		return true
	case !c.filled || uid < c.from:
		return false
	case c.end:
		return true
	}
	return len(c.refs) > 0 && uid <= c.refs[len(c.refs)-1].uid
}

func (c *refCursor) find(uid imap.UID) (ref, bool) {
	if !c.covers(uid) {
		n := minRefBlock
		if c.filled && len(c.refs) > 0 && c.k == len(c.refs) && uid > c.refs[len(c.refs)-1].uid {
			// The block was used to its end: the next is likely used
			// too.
			n = max(min(2*len(c.refs), maxRefBlock), minRefBlock)
		}
		if cap(c.buf) < n {
			c.buf = make([]ref, 0, n)
		}
		c.refs = c.mb.refsFrom(c.st, c.set, uid, c.buf[:0:n])
		c.k, c.from, c.end, c.filled = 0, uid, len(c.refs) < n, true
	}
	if c.k > 0 && c.refs[c.k-1].uid >= uid {
		c.k = sort.Search(len(c.refs), func(i int) bool { return c.refs[i].uid >= uid })
	}
	for c.k < len(c.refs) && c.refs[c.k].uid < uid {
		c.k++
	}
	if c.k < len(c.refs) && c.refs[c.k].uid == uid {
		c.k++
		return c.refs[c.k-1], true
	}
	return ref{}, false
}

func toFlags(fs []string) []imap.Flag {
	out := make([]imap.Flag, len(fs))
	for i, f := range fs {
		out[i] = imap.Flag(f)
	}
	return out
}

// validity returns the UIDVALIDITY the listing was loaded with.
func (mb *mailbox) validity() uint32 {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.uidVal
}
