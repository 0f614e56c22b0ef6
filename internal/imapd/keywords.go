package imapd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// Keyword announcements (RFC 9051 section 7.3.5, RFC 3501 section 7.2.6):
// a client may take FLAGS as the full list of flags a message can show, so
// no FETCH may show a keyword before a FLAGS that lists it. A view keeps
// what it has queued and what the client surely knows:
//
//   - queued: the keywords of the latest FLAGS queued to the view's tracker
//     (or written by the session itself). It starts as the keywords in use
//     when the mailbox was selected and only grows. Before a flag change
//     with a keyword outside it is queued, a FLAGS with it added is queued.
//   - pending: the FLAGS queued but perhaps not yet written, oldest first,
//     each with its place in the queue (a poll after a non-UID FETCH, STORE
//     or SEARCH stops at the first EXPUNGE; view.written).
//   - told: keywords the client's current FLAGS surely has. After a poll,
//     the last pending FLAGS that poll surely wrote; after the session
//     writes FLAGS itself, what it wrote.
//
// A FETCH the session writes itself (FETCH FLAGS, STORE's answer) comes
// from the store, which may be ahead of what was queued, and may come while
// a FLAGS waits behind an EXPUNGE. So before each, the session compares
// the message's keywords with told and, if one is missing, writes FLAGS
// (and PERMANENTFLAGS) with them at once; if an older FLAGS is still
// queued, it queues the same FLAGS too, so that older one, written later,
// is followed again by a full one before anything queued after.

// systemFlags are the flags every mailbox has (\Recent is never stored).
var systemFlags = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

// kwSet is a set of keywords by case-folded form, with their spelling.
type kwSet map[string]string

func newKwSet(kws []string) kwSet {
	k := kwSet{}
	k.add(kws)
	return k
}

// missing reports whether flags hold a keyword not in k.
func (k kwSet) missing(flags []string) bool {
	for _, f := range flags {
		if isKeyword(f) {
			if _, ok := k[strings.ToLower(f)]; !ok {
				return true
			}
		}
	}
	return false
}

// add adds the keywords of flags and reports whether k grew.
func (k kwSet) add(flags []string) bool {
	grew := false
	for _, f := range flags {
		if fold := strings.ToLower(f); isKeyword(f) && k[fold] == "" {
			k[fold] = f
			grew = true
		}
	}
	return grew
}

func (k kwSet) clone() kwSet {
	out := make(kwSet, len(k))
	for f, s := range k {
		out[f] = s
	}
	return out
}

// flags returns the mailbox flags: the system flags, then the keywords
// sorted by their folded form.
func (k kwSet) flags() []imap.Flag {
	folds := make([]string, 0, len(k))
	for f := range k {
		folds = append(folds, f)
	}
	sort.Strings(folds)
	out := append([]imap.Flag{}, systemFlags...)
	for _, f := range folds {
		out = append(out, imap.Flag(k[f]))
	}
	return out
}

func isKeyword(f string) bool { return f != "" && f[0] != '\\' }

// queuedFlags is a FLAGS queued to a view's tracker.
type queuedFlags struct {
	set kwSet
	at  uint64 // its place in the queue (view.qn)
}

// announce queues FLAGS before a flag change that shows a keyword the view
// has not queued yet, with the mailbox mutex held.
func (v *view) announce(flags []string) {
	if !v.queued.missing(flags) {
		return
	}
	v.queued.add(flags)
	v.queueFlags()
}

// queueFlags queues FLAGS with v.queued, with the mailbox mutex held.
func (v *view) queueFlags() {
	v.mt.QueueMailboxFlags(v.queued.flags())
	v.qn++
	v.unread++
	v.pending = append(v.pending, queuedFlags{set: v.queued.clone(), at: v.qn})
}

// wroteFlags records that every FLAGS queued up to limit was written. When
// the last of them lists fewer keywords than the client was told (tell
// wrote a full FLAGS while older ones waited in the queue), it sets
// v.shrunk: the poll then writes the full list again.
func (v *view) wroteFlags(limit uint64) {
	k := 0
	for k < len(v.pending) && v.pending[k].at <= limit {
		k++
	}
	if k > 0 {
		last := v.pending[k-1].set
		for f := range v.told {
			if _, ok := last[f]; !ok {
				v.shrunk = true
				break
			}
		}
		v.told = last
		v.pending = v.pending[k:]
	}
}

// tell makes sure the client's FLAGS lists every keyword of flags before
// the session writes a FETCH showing them: if one is missing, it writes
// FLAGS and, for a read-write mailbox, PERMANENTFLAGS right away.
func (s *session) tell(flags []string) error {
	mb, v := s.sel.mb, s.sel.v
	mb.mu.Lock()
	if !v.told.missing(flags) {
		mb.mu.Unlock()
		return nil
	}
	// Queued too only when an older FLAGS may still be written after this
	// one; otherwise the client keeps this one until the next.
	if v.queued.add(flags) && len(v.pending) > 0 {
		v.queueFlags()
	}
	v.told = v.queued.clone()
	list := v.queued.flags()
	mb.mu.Unlock()
	lines := "* FLAGS (" + flagText(list) + ")\r\n"
	if !v.readOnly {
		lines += "* OK [PERMANENTFLAGS (" + flagText(permanentFlags(list)) + ")] Flags permitted\r\n"
	}
	return s.writeRaw(lines)
}

// permanentFlags is the PERMANENTFLAGS of a read-write mailbox whose
// FLAGS is list: the same flags, and \* (new keywords may be created,
// RFC 3501 section 7.1) unless list has maxKeywords keywords or more. The
// list may hold keywords that left their last message since, so \* may
// be missing while a keyword could be created; and a list written earlier
// may have \* after the mailbox reached the bound (the next command
// creating a keyword gets NO [LIMIT]).
func permanentFlags(list []imap.Flag) []imap.Flag {
	out := append([]imap.Flag{}, list...)
	if len(list)-len(systemFlags) < maxKeywords {
		out = append(out, imap.FlagWildcard)
	}
	return out
}

func flagText(list []imap.Flag) string {
	var b strings.Builder
	for i, f := range list {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(string(f))
	}
	return b.String()
}

// rawWriteTimeout bounds a response the session writes itself.
const rawWriteTimeout = time.Minute

// writeRaw writes complete untagged responses between two of the conn's
// own. This is safe while a command is handled (the conn writes nothing
// else then, and flushes each of its responses) and not between
// CreateMessage and Close of a FETCH.
func (s *session) writeRaw(lines string) error {
	nc := s.conn.NetConn()
	nc.SetWriteDeadline(time.Now().Add(rawWriteTimeout))
	defer nc.SetWriteDeadline(time.Time{})
	if _, err := io.WriteString(nc, lines); err != nil {
		return fmt.Errorf("writing FLAGS: %w", err)
	}
	return nil
}

// maxKeywords bounds the keywords in use in a mailbox, and so those of
// each of its messages. A keyword costs nothing in the log but its name in
// the one command that sets it, and every device stores it with each
// message it is set on and writes it in every FLAGS, FETCH FLAGS and
// update: one STORE 1:* of 6,715 keywords (48 KB) on 3,000 messages took
// 17 s to apply and the daemon to 860 MB, its FETCH FLAGS 1:* was 141 MB,
// and a session selected meanwhile held 1.5 GB of queued updates. Cyrus
// allows 128 keywords in a mailbox (RFC 5530's LIMIT names this case).
const maxKeywords = 256

// keywordsLimit refuses a change that would bring the keywords in use in
// the mailbox (id) beyond maxKeywords with flags' keywords, with NO
// [LIMIT] (RFC 5530 section 3). The keywords in use are read from the
// store each time: a view's keywords are no measure of them, as they
// include keywords that left their last message and leave out those the
// session set itself quietly. (Keywords a view had queued were taken
// unread: clearing 256 keywords, setting 256 others and setting the first
// again brought a mailbox to 512, and each round to 256 more.)
//
// A change that creates a keyword holds the server's keyword lock from
// its check until release, which the caller calls once the change is
// submitted: two sessions creating keywords at once each passed the
// check and went past the bound together. release is never nil.
func (s *session) keywordsLimit(ctx context.Context, id command.ID, flags []string) (release func(), err error) {
	var kws []string
	for _, f := range flags {
		if isKeyword(f) {
			kws = append(kws, f)
		}
	}
	if len(kws) == 0 {
		return noRelease, nil
	}
	inUse, err := s.store().MailboxKeywords(ctx, id)
	if err != nil {
		return noRelease, err
	}
	if !newKwSet(inUse).add(kws) {
		return noRelease, nil
	}
	release, err = s.lockKeywords(ctx)
	if err != nil {
		return noRelease, err
	}
	// Read again: another change may have created keywords meanwhile.
	if inUse, err = s.store().MailboxKeywords(ctx, id); err != nil {
		release()
		return noRelease, err
	}
	all := newKwSet(inUse)
	if all.add(kws); len(all) <= maxKeywords {
		return release, nil
	}
	release()
	return noRelease, keywordsLimitError(len(all), false)
}

func noRelease() {}

// lockKeywords takes the server's keyword lock (Server.kwLock), waiting no
// longer than ctx.
func (s *session) lockKeywords(ctx context.Context) (func(), error) {
	select {
	case s.srv.kwLock <- struct{}{}:
		return func() { <-s.srv.kwLock }, nil
	case <-ctx.Done():
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "another change creating keywords is not done yet; nothing was changed, try again later"}
	}
}

// keywordsLimitError is the NO [LIMIT] of a change that would bring a
// mailbox to n keywords (at least n, when more was not counted).
func keywordsLimitError(n int, atLeast bool) error {
	would := fmt.Sprint(n)
	if atLeast {
		would = "more than " + fmt.Sprint(maxKeywords)
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
		Text: fmt.Sprintf("the mailbox would have %s keywords, and may have at most %d: clear some from its messages first; nothing was changed",
			would, maxKeywords)}
}

// errPastBound stops copyKeywordsLimit's scan.
var errPastBound = errors.New("past the keywords bound")

// copyKeywordsLimit refuses a COPY or MOVE of the selected mailbox's
// messages refs into the mailbox to that would bring the keywords in use
// there beyond maxKeywords with the messages' keywords, as keywordsLimit
// does a STORE's, and holds the keyword lock as it does when the copies
// may create a keyword there. The messages are read only when the
// keywords in use in the two mailboxes together are past the bound, and
// the read stops at the first message that brings the target past it.
func (s *session) copyKeywordsLimit(ctx context.Context, sel *selected, refs []ref, to command.ID) (release func(), err error) {
	if to == sel.mb.id || len(refs) == 0 {
		return noRelease, nil
	}
	from, err := s.store().MailboxKeywords(ctx, sel.mb.id)
	if err != nil || len(from) == 0 {
		return noRelease, err
	}
	inUse, err := s.store().MailboxKeywords(ctx, to)
	if err != nil {
		return noRelease, err
	}
	if !newKwSet(inUse).add(from) {
		return noRelease, nil
	}
	release, err = s.lockKeywords(ctx)
	if err != nil {
		return noRelease, err
	}
	defer func() {
		if err != nil {
			release()
			release = noRelease
		}
	}()
	if inUse, err = s.store().MailboxKeywords(ctx, to); err != nil {
		return
	}
	all := newKwSet(inUse)
	if both := all.clone(); !both.add(from) || len(both) <= maxKeywords {
		return
	}
	uids := make([]mailstore.UID, len(refs))
	for i, r := range refs {
		uids[i] = mailstore.UID(r.uid)
	}
	err = sel.box.ScanUIDs(ctx, uids, mailstore.WantMetadataOnly, func(m *mailstore.Message) error {
		if all.add(m.Flags) && len(all) > maxKeywords {
			return errPastBound
		}
		return nil
	})
	if errors.Is(err, errPastBound) {
		err = keywordsLimitError(len(all), true)
	}
	return
}
