package imapd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// maxMailboxName is the longest mailbox name a command carries, in bytes
// (command.CheckMailboxName).
const maxMailboxName = 1000

// byIDName is the name a DeleteMailbox or RenameMailbox carries beside the
// mailbox's id: the name, or, for a name longer than a command may carry,
// its first 1000 bytes (whole characters, no trailing delimiter). The id
// names the mailbox (devices of this release and the one before resolve
// it by id first); a name that long comes from a RENAME of a parent that
// raced another device's CREATE below it, which the log took, and the
// mailbox could be neither deleted nor renamed (NO [SERVERBUG] the change
// could not be submitted).
func byIDName(name string) string {
	if len(name) <= maxMailboxName {
		return name
	}
	cut := name[:maxMailboxName]
	for !utf8.ValidString(cut) {
		cut = cut[:len(cut)-1]
	}
	return strings.TrimRight(cut, string(mailstore.Delim))
}

// mailboxName cleans a client's mailbox name (a trailing delimiter is
// dropped, RFC 9051 section 6.3.4) and checks it; a name the store cannot
// take gets NO [CANNOT] with the reason.
func (s *session) mailboxName(name string) (string, error) {
	name = mailstore.NormalizeName(strings.TrimSuffix(name, string(mailstore.Delim)))
	if command.CheckMailboxName(name) == nil {
		return name, nil
	}
	reason := "it starts with the delimiter / or has an empty level (//)"
	switch {
	case name == "":
		reason = "it is empty"
	case len(name) > maxMailboxName:
		reason = "names are at most 1000 bytes long"
	case !utf8.ValidString(name):
		reason = "it is not UTF-8"
	case strings.IndexFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0:
		reason = "it has a control character"
	}
	return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
		Text: fmt.Sprintf("%s cannot be a mailbox name: %s", s.quoteName(name), reason)}
}

// Create implements imapserver.Session: one CreateMailbox command
// (RFC 6154 section 3 for USE).
func (s *session) Create(name string, opts *imap.CreateOptions) error {
	name, err := s.mailboxName(name)
	if err != nil {
		return err
	}
	cmd := &command.Command{Kind: command.CreateMailbox, Mailbox: name}
	if opts != nil && len(opts.SpecialUse) > 0 {
		if len(opts.SpecialUse) > 1 {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR",
				Text: "only one special use per mailbox"}
		}
		switch a := opts.SpecialUse[0]; a {
		case imap.MailboxAttrAll, imap.MailboxAttrArchive, imap.MailboxAttrDrafts, imap.MailboxAttrFlagged,
			imap.MailboxAttrJunk, imap.MailboxAttrSent, imap.MailboxAttrTrash:
			cmd.SpecialUse = string(a)
		default:
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR",
				Text: fmt.Sprintf("unknown special use %q", cleanText(string(a)))}
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.store().MailboxByName(ctx, name); err == nil {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists,
			Text: fmt.Sprintf("mailbox %s exists already", s.quoteName(name))}
	}
	_, err = s.submit(cmd)
	return err
}

// Delete implements imapserver.Session: one DeleteMailbox command, of
// version 2 once every device of the user reads it (WritesVersion2),
// naming the messages this device shows in the mailbox: only those go,
// and the mailbox stays if another device filed a message into it before
// the command reached the log (docs/IMAP.md "Offline").
func (s *session) Delete(name string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	mb, err := s.store().MailboxByName(ctx, name)
	if err != nil {
		return s.storeError(err, name)
	}
	if mb.ID == mailstore.InboxID() {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "INBOX cannot be deleted"}
	}
	cmd := &command.Command{Kind: command.DeleteMailbox, Mailbox: byIDName(mb.Name), MailboxID: mb.ID}
	if s.store().WritesVersion2(ctx) {
		cmd.Version = command.Version2
		if err := s.store().Scan(ctx, mb.ID, 0, func(m *mailstore.Message) error {
			cmd.IDs = append(cmd.IDs, m.ID)
			return nil
		}); err != nil {
			return s.storeError(err, name)
		}
	}
	_, err = s.submit(cmd)
	return err
}

// Rename implements imapserver.Session: one RenameMailbox command.
func (s *session) Rename(name, newName string, _ *imap.RenameOptions) error {
	newName, err := s.mailboxName(newName)
	if err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	mb, err := s.store().MailboxByName(ctx, name)
	if err != nil {
		return s.storeError(err, name)
	}
	if _, err := s.store().MailboxByName(ctx, newName); err == nil {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists,
			Text: fmt.Sprintf("mailbox %s exists already", s.quoteName(newName))}
	}
	if mb.ID != mailstore.InboxID() {
		if err := s.renameable(ctx, mb.Name, newName); err != nil {
			return err
		}
	}
	_, err = s.submit(&command.Command{Kind: command.RenameMailbox, Mailbox: byIDName(mb.Name), MailboxID: mb.ID, NewName: newName})
	return err
}

// renameable refuses, before anything is appended, a rename the apply
// would reject (mailstore's renameMailbox): into the mailbox's own
// hierarchy ("x" to "x/y"), or one that would give a mailbox below it the
// name of another ("a" to "b", with "a/x" and "b/x" but no "b", which a
// DELETE of "b" leaves). Sent, such a rename was answered NO after its
// entry was in the log, and every device listed the entry as rejected in
// its status for good. It also refuses one that would give a mailbox
// below it a name over maxMailboxName bytes, which the apply takes but no
// command can carry: that mailbox could then be neither deleted nor
// renamed (the change could not be encoded), on every device.
func (s *session) renameable(ctx context.Context, name, newName string) error {
	prefix := name + string(mailstore.Delim)
	if strings.HasPrefix(newName, prefix) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: fmt.Sprintf("%s cannot be renamed into itself (%s)", s.quoteName(name), s.quoteName(newName))}
	}
	all, err := s.store().MailboxIdentities(ctx)
	if err != nil {
		return s.storeError(err, name)
	}
	exists := make(map[string]bool, len(all))
	for _, mb := range all {
		exists[mb.Name] = true
	}
	for _, mb := range all {
		child, ok := strings.CutPrefix(mb.Name, prefix)
		if !ok {
			continue
		}
		if exists[newName+string(mailstore.Delim)+child] {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists,
				Text: fmt.Sprintf("mailbox %s exists already (%s would be renamed to it)",
					s.quoteName(newName+string(mailstore.Delim)+child), s.quoteName(mb.Name))}
		}
		if n := len(newName) + 1 + len(child); n > maxMailboxName {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
				Text: fmt.Sprintf("%s would be renamed to a name of %d bytes; names are at most %d bytes long",
					s.quoteName(mb.Name), n, maxMailboxName)}
		}
	}
	return nil
}

// Subscribe implements imapserver.Session.
func (s *session) Subscribe(name string) error { return s.subscribe(command.Subscribe, name) }

// Unsubscribe implements imapserver.Session.
func (s *session) Unsubscribe(name string) error { return s.subscribe(command.Unsubscribe, name) }

func (s *session) subscribe(kind command.Kind, name string) error {
	name, err := s.mailboxName(name)
	if err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	cmd := &command.Command{Kind: kind, Mailbox: name}
	if mb, err := s.store().MailboxByName(ctx, name); err == nil {
		cmd.Mailbox, cmd.MailboxID = mb.Name, mb.ID
	} else if !errors.Is(err, mailstore.ErrNoMailbox) {
		return s.storeError(err, name)
	} else if kind == command.Subscribe {
		return s.noMailbox(name)
	}
	_, err = s.submit(cmd)
	return err
}

// listEntry is one name LIST may return.
type listEntry struct {
	name       string
	mb         *mailstore.Mailbox // nil: a name with no mailbox
	subscribed bool
	children   bool     // a mailbox below it
	subbed     []string // subscribed names below it
}

// List implements imapserver.Session: LIST (RFC 9051 section 6.3.9, RFC
// 3501 section 6.3.8), LSUB (RFC 3501 section 6.3.9), RFC 5258
// LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE and RFC 3348
// CHILDREN.
//
// go-imap drops an empty pattern before calling List, so LIST with no
// pattern at all was LIST ref "": the hierarchy delimiter and the root of
// the reference, which is "" for every name here (no name starts with the
// delimiter). LSUB passes its pattern as given, and is told from LIST
// (SUBSCRIBED) by the command's name (frameConn).
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, opts *imap.ListOptions) error {
	if opts == nil {
		opts = &imap.ListOptions{}
	}
	lsub := false
	if fc := framer(s.conn.NetConn()); fc != nil {
		lsub = fc.command() == "LSUB"
	}
	if len(patterns) == 0 || (lsub && len(patterns) == 1 && patterns[0] == "") {
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: mailstore.Delim})
	}
	ctx, cancel := s.ctx()
	defer cancel()
	// The counts only for LIST's RETURN (STATUS): they read every
	// message of every mailbox.
	list := s.store().MailboxIdentities
	if opts.ReturnStatus != nil {
		list = s.store().Mailboxes
	}
	boxes, err := list(ctx)
	if err != nil {
		return s.storeError(err, "")
	}
	subs, err := s.store().Subscriptions(ctx)
	if err != nil {
		return s.storeError(err, "")
	}
	entries := map[string]*listEntry{}
	get := func(name string) *listEntry {
		e := entries[name]
		if e == nil {
			e = &listEntry{name: name}
			entries[name] = e
		}
		return e
	}
	for i := range boxes {
		get(boxes[i].Name).mb = &boxes[i]
	}
	for _, n := range subs {
		get(n).subscribed = true
	}
	// Every level above a name is an entry too, so that % finds the way
	// down: a level with no mailbox is listed when a mailbox is below it
	// (\Noselect, RFC 3501 section 6.3.8), or, for LSUB and RECURSIVEMATCH,
	// when a subscribed name below it is not matched itself.
	for _, n := range sortedNames(entries) {
		e := entries[n]
		for i := 0; i < len(n); i++ {
			if n[i] != mailstore.Delim {
				continue
			}
			p := get(n[:i])
			if e.mb != nil {
				p.children = true
			}
			if e.subscribed {
				p.subbed = append(p.subbed, n)
			}
		}
	}
	// A subscribed name below e that the patterns do not match: LSUB
	// lists e as \Noselect (RFC 3501 section 6.3.9), RECURSIVEMATCH with
	// CHILDINFO (RFC 5258 section 3.5).
	unmatchedSub := func(e *listEntry) bool {
		for _, n := range e.subbed {
			if !matchAny(n, ref, patterns) {
				return true
			}
		}
		return false
	}
	extended := opts.SelectSubscribed || opts.SelectSpecialUse || opts.SelectRemote
	for _, n := range sortedNames(entries) {
		e := entries[n]
		if !matchAny(n, ref, patterns) {
			continue
		}
		if lsub {
			if err := s.writeLSub(w, e, unmatchedSub); err != nil {
				return err
			}
			continue
		}
		childInfo := opts.SelectRecursiveMatch && unmatchedSub(e)
		switch {
		case opts.SelectSubscribed && !e.subscribed && !childInfo:
			continue
		case opts.SelectSpecialUse && (e.mb == nil || e.mb.SpecialUse == ""):
			continue
		case e.mb == nil && !e.children && !(opts.SelectSubscribed && (e.subscribed || childInfo)):
			continue
		}
		data := &imap.ListData{Delim: mailstore.Delim, Mailbox: n}
		switch {
		case e.mb == nil && extended:
			data.Attrs = append(data.Attrs, imap.MailboxAttrNonExistent)
		case e.mb == nil:
			data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
		}
		if e.children {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if e.subscribed && (opts.ReturnSubscribed || opts.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if e.mb != nil && e.mb.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(e.mb.SpecialUse))
		}
		if childInfo {
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if opts.ReturnStatus != nil && e.mb != nil {
			if data.Status, err = s.statusData(ctx, e.mb, opts.ReturnStatus); err != nil {
				return err
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// writeLSub writes e's LSUB line, if LSUB lists it: a subscribed name
// (\Noselect if it has no mailbox), or a level with a subscribed name below
// it that the pattern stopped short of (\Noselect, RFC 3501 section 6.3.9).
func (s *session) writeLSub(w *imapserver.ListWriter, e *listEntry, unmatchedSub func(*listEntry) bool) error {
	var attrs []imap.MailboxAttr
	switch {
	case e.subscribed && e.mb != nil:
		attrs = []imap.MailboxAttr{}
	case e.subscribed, unmatchedSub(e):
		attrs = []imap.MailboxAttr{imap.MailboxAttrNoSelect}
	default:
		return nil
	}
	return w.WriteList(&imap.ListData{Attrs: attrs, Delim: mailstore.Delim, Mailbox: e.name})
}

func sortedNames(m map[string]*listEntry) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func matchAny(name, ref string, patterns []string) bool {
	// INBOX at the start of the reference or a pattern, in any case,
	// names INBOX, as it does in every other command (NormalizeName):
	// LIST "" "inbox/*" lists INBOX/y.
	// INBOX, and the INBOX of a name below it, matches any case of a
	// wildcard pattern too (RFC 9051 section 5.1): LIST "" "inbox*" lists
	// INBOX/y as well as INBOX.
	ref = normalizeListName(ref)
	fold := inboxFold(name, mailstore.Delim)
	for _, p := range patterns {
		p = normalizeListName(p)
		if matchListFold(name, mailstore.Delim, ref, p, fold) {
			return true
		}
	}
	return false
}

// normalizeListName is mailstore.NormalizeName for a LIST reference or
// pattern, which may end with the delimiter ("inbox/" is "INBOX/").
func normalizeListName(s string) string {
	if t, ok := strings.CutSuffix(s, string(mailstore.Delim)); ok {
		return mailstore.NormalizeName(t) + string(mailstore.Delim)
	}
	return mailstore.NormalizeName(s)
}

// Status implements imapserver.Session. A mailbox whose listing is in
// memory (INBOX, and those selected since the start) is answered from it
// (listedStatus); any other from the store, which counts its messages.
func (s *session) Status(name string, opts *imap.StatusOptions) (*imap.StatusData, error) {
	// The grammar asks for at least one item (RFC 9051 section 9,
	// "(" status-att *(SP status-att) ")"); go-imap takes an empty list,
	// and every item it reads sets one of opts' fields.
	if *opts == (imap.StatusOptions{}) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug,
			Text: "STATUS names at least one item (RFC 9051 section 9)"}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	id, err := s.store().MailboxIdentity(ctx, name)
	if err != nil {
		return nil, s.storeError(err, name)
	}
	if data, ok, err := s.listedStatus(ctx, id, opts); err != nil || ok {
		return data, err
	}
	mb, err := s.store().MailboxByName(ctx, name)
	if err != nil {
		return nil, s.storeError(err, name)
	}
	return s.statusData(ctx, mb, opts)
}

// listedStatus answers STATUS of id (read from the store: its name and
// UIDVALIDITY) from the mailbox's listing in memory, if it is loaded:
// UIDNEXT, MESSAGES, UNSEEN, DELETED, RECENT and SIZE are all the
// listing's, taken under its mutex, so of one state, the one its sessions
// are shown; the store is read for the sizes the listing lacks (messages
// added since it was loaded), once. That state may be a batch behind the
// store (committed, not yet applied to the listing, as a session's EXISTS
// is), never ahead, and never older than an answer before it. ok is
// false, and the store is to answer, when the mailbox is not loaded, was
// deleted, or has another UIDVALIDITY in the store (made again, and not
// yet told to the sessions).
func (s *session) listedStatus(ctx context.Context, id *mailstore.Mailbox, opts *imap.StatusOptions) (data *imap.StatusData, ok bool, err error) {
	s.srv.mu.Lock()
	mb := s.srv.boxes[id.ID]
	s.srv.mu.Unlock()
	if mb == nil {
		return nil, false, nil
	}
	if opts.Size {
		mb.mu.Lock()
		var lo, hi imap.UID
		for k, n := range mb.sizes {
			if n == unknownSize {
				if lo == 0 {
					lo = mb.uids[k]
				}
				hi = mb.uids[k]
			}
		}
		uv := mb.uidVal
		mb.mu.Unlock()
		if lo != 0 {
			// Read as the listing's UIDVALIDITY: not the sizes of
			// another mailbox's messages under its UIDs.
			err := s.fillListing(ctx, mb, s.store().Selected(mb.id, uv), lo, hi)
			if renewed := errors.Is(err, mailstore.ErrUIDValidity); renewed || errors.Is(err, mailstore.ErrNoMailbox) {
				s.srv.retire(mb, renewed)
				return nil, false, nil
			}
			if err != nil {
				return nil, false, s.storeError(err, id.Name)
			}
		}
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if !mb.loaded || mb.deleted || mb.uidVal != id.UIDValidity {
		return nil, false, nil
	}
	data = &imap.StatusData{Mailbox: id.Name, UIDNext: mb.uidNext, UIDValidity: id.UIDValidity}
	if opts.NumMessages {
		n := uint32(len(mb.uids))
		data.NumMessages = &n
	}
	if opts.NumUnseen || opts.NumDeleted {
		// Whether each list of flags has \Seen, \Deleted.
		seen := make([]bool, len(mb.lists))
		deleted := make([]bool, len(mb.lists))
		for n, list := range mb.lists {
			seen[n], deleted[n] = hasFlag(list, `\Seen`), hasFlag(list, `\Deleted`)
		}
		var unseen, del uint32
		for _, n := range mb.flags {
			if !seen[n] {
				unseen++
			}
			if deleted[n] {
				del++
			}
		}
		if opts.NumUnseen {
			data.NumUnseen = &unseen
		}
		if opts.NumDeleted {
			data.NumDeleted = &del
		}
	}
	if opts.NumRecent {
		floor := s.srv.recentFloor(mb.id)
		k := sort.Search(len(mb.uids), func(i int) bool { return mb.uids[i] > floor })
		n := uint32(len(mb.uids) - k)
		data.NumRecent = &n
	}
	if opts.Size {
		var n int64
		for _, size := range mb.sizes {
			if size == unknownSize {
				// Of 4 GiB or more, or added since the sizes were read.
				return nil, false, nil
			}
			n += int64(size)
		}
		data.Size = &n
	}
	return data, true, nil
}

func (s *session) statusData(ctx context.Context, mb *mailstore.Mailbox, opts *imap.StatusOptions) (*imap.StatusData, error) {
	data := &imap.StatusData{Mailbox: mb.Name, UIDNext: imap.UID(mb.UIDNext), UIDValidity: mb.UIDValidity}
	if opts.NumMessages {
		n := mb.Messages
		data.NumMessages = &n
	}
	if opts.NumUnseen {
		n := mb.Unseen
		data.NumUnseen = &n
	}
	if opts.NumRecent {
		n, err := s.statusRecent(ctx, mb)
		if err != nil {
			return nil, s.storeError(err, mb.Name)
		}
		data.NumRecent = &n
	}
	if opts.Size {
		n := mb.Size
		data.Size = &n
	}
	if opts.NumDeleted {
		var n uint32
		err := s.store().Scan(ctx, mb.ID, 0, func(m *mailstore.Message) error {
			if hasFlag(m.Flags, `\Deleted`) {
				n++
			}
			return nil
		})
		if err != nil {
			return nil, s.storeError(err, mb.Name)
		}
		data.NumDeleted = &n
	}
	return data, nil
}
