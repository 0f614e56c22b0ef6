package imapd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// codeExpungeIssued is RFC 9051's EXPUNGEISSUED response code.
const codeExpungeIssued imap.ResponseCode = "EXPUNGEISSUED"

// checkSeqSet refuses a sequence set naming a number beyond the messages
// the client was told of, or "*" when it was told of none, with BAD (RFC
// 9051 and RFC 3501 section 9, seq-number). UID sets are not checked: a
// UID that does not exist is ignored (RFC 9051 section 6.4.9).
func (s *session) checkSeqSet(set imap.NumSet) error {
	seqs, ok := set.(imap.SeqSet)
	if !ok || imap.IsSearchRes(set) {
		return nil
	}
	fc := framer(s.conn.NetConn())
	if fc == nil {
		return nil
	}
	known := fc.knownMessages()
	if known < 0 {
		return nil
	}
	for _, r := range seqs {
		for _, n := range []uint32{r.Start, r.Stop} {
			if (n == 0 && known == 0) || int64(n) > known {
				text := fmt.Sprintf("message %d does not exist: the mailbox has %d", n, known)
				if n == 0 {
					text = "the mailbox is empty: * names no message"
				}
				return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: text}
			}
		}
	}
	return nil
}

// known is how many messages the client was told the selected mailbox
// has (frameConn.knownMessages), -1 when that is not known.
func (s *session) known() int64 {
	if fc := framer(s.conn.NetConn()); fc != nil {
		return fc.knownMessages()
	}
	return -1
}

// targets resolves set to messages and their ids, in UID order; messages
// gone from the store meanwhile are left out.
func (s *session) targets(ctx context.Context, sel *selected, set imap.NumSet) ([]ref, []command.ID, map[command.ID]imap.UID, error) {
	refs := sel.mb.resolve(sel.st, s.known(), set, sel.searchRes)
	if len(refs) == 0 {
		return nil, nil, nil, nil
	}
	uids := make([]mailstore.UID, len(refs))
	for i, r := range refs {
		uids[i] = mailstore.UID(r.uid)
	}
	byUID, err := sel.box.MessageIDs(ctx, uids)
	if err != nil {
		return nil, nil, nil, s.selectedError(sel, err)
	}
	ids := make([]command.ID, 0, len(byUID))
	byID := make(map[command.ID]imap.UID, len(byUID))
	kept := refs[:0]
	for _, r := range refs {
		if id, ok := byUID[mailstore.UID(r.uid)]; ok {
			ids = append(ids, id)
			byID[id] = r.uid
			kept = append(kept, r)
		}
	}
	return kept, ids, byID, nil
}

// Store implements imapserver.Session: one SetFlags, ClearFlags or
// ReplaceFlags command for all the messages.
func (s *session) Store(w *imapserver.FetchWriter, set imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	sel, err := s.writable()
	if err != nil {
		return err
	}
	list, err := canonicalFlags(flags.Flags)
	if err != nil {
		return err
	}
	if err := s.checkSeqSet(set); err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	refs, ids, err := s.storeChange(ctx, sel, set, flags.Op, list)
	if err != nil || len(ids) == 0 {
		return err
	}
	if flags.Silent {
		return nil
	}
	_, isUID := set.(imap.UIDSet)
	err = s.writeFlags(ctx, w, sel, refs, isUID)
	if errors.Is(err, mailstore.ErrUIDValidity) || errors.Is(err, mailstore.ErrNoMailbox) {
		// The change is made, on the messages the session named; the
		// mailbox is gone for it since (selectedError), so its flags
		// are not shown but the answer is OK.
		s.selectedError(sel, err)
		return nil
	}
	return err
}

// storeChange resolves a STORE's messages and submits its change, sharing
// the mailbox's changes lock when it may take \Deleted off (not while the
// answer is written: a client that does not read would hold up every
// EXPUNGE of the mailbox). A change that leaves \Deleted alone, or sets
// it, needs no order with an EXPUNGE: applied before or after it, the
// same messages go. A change that may add keywords is checked against
// their bound (keywordsLimit) under that lock, so that the keyword lock
// is always taken after it (transfer takes them in that order too).
func (s *session) storeChange(ctx context.Context, sel *selected, set imap.NumSet, op imap.StoreFlagsOp, list []string) ([]ref, []command.ID, error) {
	if undeletes(op, list) {
		sel.mb.changes.RLock()
		defer sel.mb.changes.RUnlock()
	}
	if op != imap.StoreFlagsDel {
		release, err := s.keywordsLimit(ctx, sel.mb.id, list)
		if err != nil {
			return nil, nil, s.selectedError(sel, err)
		}
		defer release()
	}
	refs, ids, _, err := s.targets(ctx, sel, set)
	if err != nil || len(ids) == 0 {
		return nil, nil, err
	}
	var kind command.Kind
	switch op {
	case imap.StoreFlagsAdd:
		kind = command.SetFlags
	case imap.StoreFlagsDel:
		kind = command.ClearFlags
	default:
		kind = command.ReplaceFlags
	}
	if len(list) > 0 || kind == command.ReplaceFlags {
		if _, err := s.submitQuiet(sel, &command.Command{Kind: kind, Flags: list, IDs: ids}); err != nil {
			return nil, nil, err
		}
	}
	return refs, ids, nil
}

// writeFlags writes FETCH (FLAGS) for refs with their current flags.
func (s *session) writeFlags(ctx context.Context, w *imapserver.FetchWriter, sel *selected, refs []ref, uid bool) error {
	if len(refs) == 0 {
		return nil
	}
	span := imap.UIDSet{{Start: refs[0].uid, Stop: refs[len(refs)-1].uid}}
	return sel.box.Fetch(ctx, storeUIDs(span), 0, func(m *mailstore.Message) error {
		r, ok := findRef(refs, imap.UID(m.UID))
		if !ok {
			return nil
		}
		m.Flags = s.showRecent(imap.UID(m.UID), m.Flags)
		if err := s.tell(m.Flags); err != nil {
			return err
		}
		rw := w.CreateMessage(r.seq)
		if uid {
			rw.WriteUID(imap.UID(m.UID))
		}
		rw.WriteFlags(toFlags(m.Flags))
		return rw.Close()
	})
}

// Expunge implements imapserver.Session: one Expunge command naming the
// visible messages flagged \Deleted (within uids for UID EXPUNGE). The
// EXPUNGE responses come from the tracker, never from w.
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	// CLOSE calls Expunge with an empty writer; on a read-only mailbox it
	// just closes (RFC 9051 section 6.4.1), and so it does on one that is
	// gone for the session: none of its messages is there to expunge.
	closing := uids == nil && *w == (imapserver.ExpungeWriter{})
	if s.sel != nil && closing {
		if deleted, _ := s.sel.mb.isDeleted(); deleted || s.sel.readOnly {
			return nil
		}
	}
	// EXPUNGE and UID EXPUNGE in a read-only mailbox remove nothing and
	// answer OK, with no EXPUNGE response: EXAMINE permits no change to the
	// mailbox (RFC 9051 section 6.3.3), and RFC 9051 section 6.4.3 only
	// allows NO, it does not ask for it. Gnus expunges the mailbox it has
	// open as it leaves a group, and after moving a message that is the
	// destination it EXAMINEd to count; Dovecot answers OK too.
	sel, err := s.current()
	if err != nil {
		return err
	}
	if sel.readOnly {
		return nil
	}
	var set imap.NumSet = imap.SeqSet{{Start: 1, Stop: 0}}
	if uids != nil {
		set = *uids
	}
	sel.mb.changes.Lock()
	defer sel.mb.changes.Unlock()
	refs := sel.mb.resolve(sel.st, s.known(), set, sel.searchRes)
	if len(refs) == 0 {
		return nil
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var ids []command.ID
	span := imap.UIDSet{{Start: refs[0].uid, Stop: refs[len(refs)-1].uid}}
	err = sel.box.Fetch(ctx, storeUIDs(span), 0, func(m *mailstore.Message) error {
		if _, ok := findRef(refs, imap.UID(m.UID)); ok && hasFlag(m.Flags, `\Deleted`) {
			ids = append(ids, m.ID)
		}
		return nil
	})
	if err != nil {
		err = s.selectedError(sel, err)
		if deleted, _ := sel.mb.isDeleted(); closing && deleted {
			return nil
		}
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	cmd := &command.Command{Kind: command.Expunge, IDs: ids}
	if s.store().WritesVersion2(ctx) {
		// Version 2: a message another device took \Deleted off or filed
		// elsewhere before this reaches the log stays (docs/IMAP.md
		// "Offline"). Version 1 until every device of the user reads it.
		cmd.Version, cmd.Flags, cmd.MailboxID = command.Version2, []string{`\Deleted`}, sel.mb.id
	}
	_, err = s.submit(cmd)
	return err
}

// undeletes reports whether a STORE may take \Deleted off: -FLAGS with it,
// or FLAGS without it.
func undeletes(op imap.StoreFlagsOp, list []string) bool {
	switch op {
	case imap.StoreFlagsDel:
		return hasFlag(list, `\Deleted`)
	case imap.StoreFlagsSet:
		return !hasFlag(list, `\Deleted`)
	}
	return false
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// Copy implements imapserver.Session: one Copy command.
func (s *session) Copy(set imap.NumSet, dest string) (*imap.CopyData, error) {
	return s.transfer(command.Copy, set, dest)
}

// Move implements imapserver.SessionMove: one Move command. Only the
// COPYUID goes through w; the EXPUNGEs come from the tracker.
func (s *session) Move(w *imapserver.MoveWriter, set imap.NumSet, dest string) error {
	if _, err := s.writable(); err != nil {
		return err
	}
	data, err := s.transfer(command.Move, set, dest)
	if err != nil || data == nil {
		return err
	}
	return w.WriteCopyData(data)
}

func (s *session) transfer(kind command.Kind, set imap.NumSet, dest string) (*imap.CopyData, error) {
	sel, err := s.current()
	if err != nil {
		return nil, err
	}
	if err := s.checkSeqSet(set); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	to, err := s.store().MailboxByName(ctx, dest)
	if err != nil {
		if errors.Is(err, mailstore.ErrNoMailbox) {
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate,
				Text: fmt.Sprintf("no mailbox %s; create it first", s.quoteName(dest))}
		}
		return nil, s.storeError(err, dest)
	}
	if kind == command.Move {
		// A copy is a message of its own; a moved one keeps its id,
		// which an EXPUNGE names.
		sel.mb.changes.RLock()
		defer sel.mb.changes.RUnlock()
	}
	refs, ids, byID, err := s.targets(ctx, sel, set)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		if _, uid := set.(imap.UIDSet); (uid || imap.IsSearchRes(set)) && len(sel.mb.resolve(sel.st, s.known(), set, sel.searchRes)) == 0 {
			// UIDs that name no message the client can see, or an
			// empty saved result: nothing to do, and OK (RFC 9051
			// section 6.4.9, RFC 5182 section 2.1).
			return nil, nil
		}
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: codeExpungeIssued,
			Text: "none of these messages exist any more"}
	}
	// The copies keep their keywords: the target's bound holds for
	// them as for a STORE (all or nothing).
	release, err := s.copyKeywordsLimit(ctx, sel, refs, to.ID)
	if err != nil {
		return nil, s.selectedError(sel, err)
	}
	o, err := s.submit(&command.Command{Kind: kind, Mailbox: to.Name, MailboxID: to.ID, IDs: ids})
	release()
	if err != nil {
		return nil, err
	}
	if len(o.Placed) == 0 {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: codeExpungeIssued,
			Text: "the messages were expunged by another device meanwhile; nothing was done"}
	}
	// The UIDVALIDITY the copies' UIDs are of: the destination's in the
	// transaction that gave them (to's, read before the change was
	// submitted, may be older: a take-back or a restore's commit
	// meanwhile made the mailbox again). None only in the outcome of a
	// change queued by an older version whose mailbox is gone since: no
	// COPYUID.
	uv := o.Placed[0].UIDValidity
	if uv == 0 {
		return nil, nil
	}
	data := &imap.CopyData{UIDValidity: uv}
	var src, dst imap.UIDSet
	for _, p := range o.Placed {
		src.AddNum(byID[p.Source])
		dst.AddNum(imap.UID(p.UID))
	}
	data.SourceUIDs, data.DestUIDs = src, dst
	return data, nil
}

// Append implements imapserver.Session: one Append command.
func (s *session) Append(name string, r imap.LiteralReader, opts *imap.AppendOptions) (*imap.AppendData, error) {
	limit := s.srv.cfg.MaxMessageBytes
	if r.Size() > limit {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig,
			Text: fmt.Sprintf("messages are limited to %d bytes", limit)}
	}
	// The message's bytes are taken from the APPENDs' budget before it
	// is read (the client waits meanwhile), and given back once answered,
	// or when the message stops coming (readAppend).
	hold := r.Size()
	if err := s.srv.appendMem.Acquire(s.srv.ctx, hold); err != nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "the server is closing; nothing was appended"}
	}
	var once sync.Once
	giveBack := func() { once.Do(func() { s.srv.appendMem.Release(hold) }) }
	defer giveBack()
	body, err := s.srv.readAppend(io.LimitReader(r, limit+1), hold, giveBack)
	if err != nil {
		return nil, err
	}
	if int64(len(body)) != r.Size() {
		// The connection ended inside the literal: a part of the
		// message is not the message.
		return nil, fmt.Errorf("reading appended message: %w: %d of %d bytes", io.ErrUnexpectedEOF, len(body), r.Size())
	}
	if fc := framer(s.conn.NetConn()); fc != nil {
		rest, err := fc.appendEnd()
		if err != nil {
			return nil, fmt.Errorf("reading the end of an APPEND: %w", err)
		}
		if rest != "" {
			if len(rest) > 64 {
				rest = rest[:64] + "..."
			}
			return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug,
				Text: fmt.Sprintf("%q follows the message: an APPEND ends with it (RFC 9051 section 6.3.12); nothing was appended",
					strings.ToValidUTF8(rest, "?"))}
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	to, err := s.store().MailboxByName(ctx, name)
	if err != nil {
		if errors.Is(err, mailstore.ErrNoMailbox) {
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate,
				Text: fmt.Sprintf("no mailbox %s; create it first", s.quoteName(name))}
		}
		return nil, s.storeError(err, name)
	}
	var flags []string
	date := time.Now()
	release := noRelease
	defer func() { release() }()
	if opts != nil {
		if flags, err = canonicalFlags(opts.Flags); err != nil {
			return nil, err
		}
		if release, err = s.keywordsLimit(ctx, to.ID, flags); err != nil {
			return nil, s.storeError(err, name)
		}
		if !opts.Time.IsZero() {
			// Stored within what INTERNALDATE can show (wireDate), so
			// that SEARCH BEFORE, ON and SINCE see the date FETCH shows.
			date = clampDate(opts.Time)
		}
	}
	ms := date.UnixMilli()
	if ms == 0 {
		ms = 1 // 0 means "no date" in a command
	}
	end := s.srv.appendStart(to.ID)
	defer end()
	o, err := s.submit(&command.Command{Kind: command.Append, Mailbox: to.Name, MailboxID: to.ID,
		Flags: flags, Date: ms, Body: body})
	release()
	release = noRelease
	if err != nil {
		return nil, err
	}
	switch len(o.Placed) {
	case 0:
		// Applied, and the message was moved or expunged since (an
		// outcome rebuilt after the append's answer was lost: syncer's
		// seenOutcome): it was appended, so OK without APPENDUID (RFC
		// 4315 section 3 lets a server leave it out), not an error a
		// client answers by appending again.
		s.srv.log.Info("append applied; the message is no longer where it was placed", "pos", o.Pos)
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("append placed %d messages", len(o.Placed))
	}
	// As for COPYUID (transfer): the UIDVALIDITY of the transaction that
	// gave the UID; without one, no APPENDUID.
	p := o.Placed[0]
	if p.UIDValidity == 0 {
		return nil, nil
	}
	return &imap.AppendData{UID: imap.UID(p.UID), UIDValidity: p.UIDValidity}, nil
}

// errAppendStalled answers an APPEND whose message stopped coming.
var errAppendStalled = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
	Text: "the message stopped coming; its share of the memory for APPENDs went to others; nothing was appended"}

// readAppend reads an APPEND's message of size bytes from r, holding its
// share of Config.AppendMemory, which giveBack returns. A window of
// Config.AppendStall that brings less than appendProgress bytes, or the
// rest of the message, gives the share back and drops what came: the
// reading goroutine holds only its buffer from then on, and the APPEND
// gets errAppendStalled when more bytes come (the library reads the rest
// of the literal and drops it) or an error when the connection ends.
func (s *Server) readAppend(r io.Reader, size int64, giveBack func()) ([]byte, error) {
	var (
		mu     sync.Mutex
		body   []byte
		got    int64 // bytes read
		seen   int64 // got at the start of the window
		gaveUp bool
		done   bool
		timer  *time.Timer
	)
	stall := s.cfg.AppendStall
	check := func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		if got-seen >= min(appendProgress, size-seen) {
			seen = got
			timer.Reset(stall)
			return
		}
		gaveUp, body = true, nil
		giveBack()
		s.log.Info("append given up: its message stopped coming", "size", size, "received", got)
	}
	mu.Lock()
	timer = time.AfterFunc(stall, check)
	mu.Unlock()
	defer func() {
		mu.Lock()
		done = true
		timer.Stop()
		mu.Unlock()
	}()
	buf := make([]byte, min(size+1, 32<<10))
	for {
		n, err := r.Read(buf)
		mu.Lock()
		got += int64(n)
		stalled := gaveUp
		if !stalled {
			body = append(body, buf[:n]...)
			// Read whole: the share is the APPEND's until its answer.
			done = err == io.EOF
		}
		mu.Unlock()
		if stalled {
			return nil, errAppendStalled
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading appended message: %w", err)
		}
	}
	if body == nil {
		body = []byte{}
	}
	return body, nil
}
