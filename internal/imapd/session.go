package imapd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"cspool/internal/devicedb"
	"cspool/internal/loginguard"
	"cspool/internal/mailstore"
)

// session is one IMAP connection.
type session struct {
	srv  *Server
	conn *imapserver.Conn

	authed   bool
	failures int  // failed logins on this connection
	closing  bool // failed MaxFailures times: BYE sent, closing
	sel      *selected
}

// selected is the state of the selected mailbox.
type selected struct {
	mb        *mailbox
	v         *view
	st        *imapserver.SessionTracker // v.st
	readOnly  bool
	searchRes []imap.UID // SEARCHRES ($), RFC 5182
	// box reads the mailbox from the store as it was selected: each read
	// fails where the store holds it with another UIDVALIDITY, or no
	// more (selectedError).
	box *mailstore.Selected
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

// AppendLimit implements imapserver.SessionAppendLimit: APPENDLIMIT in
// CAPABILITY, and APPEND of a larger literal refused with NO [TOOBIG] at
// its announcement (RFC 7889).
func (s *session) AppendLimit() uint32 { return uint32(s.srv.cfg.MaxMessageBytes) }

// readTimeout bounds store reads for one command.
const readTimeout = 5 * time.Minute

// submitTimeout bounds the wait for a submitted command to be applied.
const submitTimeout = 2 * time.Minute

func (s *session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.srv.ctx, readTimeout)
}

func (s *session) store() *mailstore.Store { return s.srv.cfg.Store }

// Close implements imapserver.Session.
func (s *session) Close() error {
	s.unselect()
	s.srv.connMu.Lock()
	delete(s.srv.conns, s.conn)
	s.srv.connMu.Unlock()
	return nil
}

// Login implements imapserver.Session, for LOGIN and AUTHENTICATE PLAIN.
// A failure is answered after the guard's delay; the MaxFailures-th closes
// the connection (LoginLimits).
func (s *session) Login(user, pass string) error {
	cfg := &s.srv.cfg
	g := s.srv.guard
	nc := s.conn.NetConn()
	if s.closing {
		return errConnClosing
	}
	if fc := framer(nc); fc != nil && !fc.loginAllowed() {
		// Refused unchecked: the password is not compared, so nothing
		// is learnt from it and no failure is counted.
		return errPrivacyRequired
	}
	peer := loginguard.Peer(nc.RemoteAddr(), nc.LocalAddr())
	if err := g.Admit(peer); err != nil {
		s.failures++
		s.endIfLast(nc)
		return errLoginsWaiting
	}
	userOK, ok := loginguard.NewCredentials(cfg.User, cfg.Password).Check(user, pass)
	if !ok {
		s.failures++
		src, d := g.Fail(peer, s.failures, userOK, s.failures >= g.Limits().MaxFailures)
		// Closing the server ends the wait; the connection goes with it.
		g.Limits().Wait(s.srv.ctx, d)
		g.Done(src)
		// Only after the delay: an early BYE would tell the guess failed.
		s.endIfLast(nc)
		return imapserver.ErrAuthFailed
	}
	if gc, ok := nc.(*loginguard.Conn); ok {
		if err := gc.StartSession(); err != nil {
			return errSessions
		}
	}
	s.authed = true
	if fc := framer(nc); fc != nil {
		remote := nc.RemoteAddr().String()
		fc.loggedIn(cfg.Autologout, func() {
			s.srv.log.Info("IMAP session logged out: no command for the autologout time", "remote", remote, "autologout", cfg.Autologout)
		})
	}
	if cfg.Alert != nil {
		if text := cleanText(cfg.Alert()); text != "" {
			// The conn writes nothing else while a command is handled and
			// flushes every response, so one line can go straight out.
			if _, err := fmt.Fprintf(s.conn.NetConn(), "* OK [ALERT] %s\r\n", text); err != nil {
				return fmt.Errorf("writing alert: %w", err)
			}
		}
	}
	return nil
}

// endIfLast, once the connection has failed MaxFailures logins, sends BYE
// and ends the connection after the reply in progress.
func (s *session) endIfLast(nc net.Conn) {
	if s.failures < s.srv.guard.Limits().MaxFailures {
		return
	}
	s.closing = true
	// As for the alert: nothing else is being written, and the tagged NO
	// follows this line.
	fmt.Fprintf(nc, "* BYE too many failed logins; closing the connection\r\n")
	if gc, ok := nc.(*loginguard.Conn); ok {
		gc.End()
	} else {
		nc.Close()
	}
}

// cleanText makes s safe as IMAP resp-text: one line of printable ASCII.
func cleanText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		} else {
			b.WriteByte(' ')
		}
	}
	return strings.TrimSpace(b.String())
}

// Select implements imapserver.Session (SELECT and EXAMINE).
func (s *session) Select(name string, opts *imap.SelectOptions) (*imap.SelectData, error) {
	s.unselect()
	ctx, cancel := s.ctx()
	defer cancel()
	readOnly := opts != nil && opts.ReadOnly
	rev2 := s.conn.EnabledCaps().Has(imap.CapIMAP4rev2)
	var info *mailstore.Mailbox
	var mb *mailbox
	var v *view
	var n, firstUnseen uint32
	var kws []string
	// A mailbox deleted under the select may have been created again with
	// a new UIDVALIDITY (docs/MAILSTORE.md): look it up again, a few times.
	for try := 0; ; try++ {
		var err error
		info, err = s.store().MailboxIdentity(ctx, name)
		if err != nil {
			return nil, s.storeError(err, name)
		}
		// An APPEND into it underway on another connection (one that
		// broke before its answer, say) ends first: its message is shown.
		s.srv.waitAppends(ctx, info.ID)
		mb, err = s.srv.acquire(ctx, info.ID)
		if err != nil {
			return nil, s.storeError(err, name)
		}
		// Read before the view opens: a keyword set after the read is
		// queued to the view with a FLAGS of its own.
		kws, err = s.store().MailboxKeywords(ctx, info.ID)
		if err != nil {
			s.srv.release(mb)
			return nil, s.storeError(err, name)
		}
		var deleted, stale bool
		v, n, firstUnseen, deleted, stale = mb.open(readOnly, rev2, kws, info.UIDValidity)
		if !deleted && !stale {
			break
		}
		mb.close(v)
		s.srv.release(mb)
		if stale {
			// The listing in memory and the store's identity differ in
			// UIDVALIDITY: the mailbox was deleted and created again
			// (a restore, a queued change taken back) and Applied has
			// not told it yet, or it was loaded after info was read.
			// The store read again says which.
			now, err := s.store().MailboxIdentity(ctx, name)
			if err != nil {
				return nil, s.storeError(err, name)
			}
			if now.ID == mb.id && now.UIDValidity != mb.validity() {
				s.srv.retire(mb, true)
			}
		}
		if try == 2 {
			return nil, s.noMailbox(name)
		}
	}
	s.sel = &selected{mb: mb, v: v, st: v.st, readOnly: readOnly, box: s.store().Selected(info.ID, info.UIDValidity)}
	if fc := framer(s.conn.NetConn()); fc != nil {
		fc.setSelected(true)
	}
	flags := newKwSet(kws).flags()
	next := imap.UID(info.UIDNext)
	mb.mu.Lock()
	if k := len(mb.uids); k > 0 && mb.uids[k-1] >= next {
		next = mb.uids[k-1] + 1
	}
	mb.mu.Unlock()
	perm := permanentFlags(flags)
	if s.sel.readOnly {
		perm = []imap.Flag{}
	}
	data := &imap.SelectData{
		NumRecent:      v.recentSent,
		Flags:          flags,
		PermanentFlags: perm,
		NumMessages:    n,
		UIDNext:        next,
		// IMAP4rev1 only; go-imap leaves it out for IMAP4rev2.
		FirstUnseenSeqNum: firstUnseen,
		UIDValidity:       info.UIDValidity,
	}
	if rev2 {
		// RFC 9051 section 6.3.2: a LIST response with the mailbox's
		// name, its attributes accurate (go-imap writes it for
		// IMAP4rev2 only).
		boxes, err := s.store().MailboxIdentities(ctx)
		if err != nil {
			s.unselect()
			return nil, s.storeError(err, name)
		}
		data.List = selectList(info, boxes)
	}
	return data, nil
}

// selectList is the LIST response of a SELECT or EXAMINE in IMAP4rev2: the
// mailbox's name as stored, \HasChildren or \HasNoChildren, and its
// special use.
func selectList(info *mailstore.Mailbox, boxes []mailstore.Mailbox) *imap.ListData {
	l := &imap.ListData{Delim: mailstore.Delim, Mailbox: info.Name, Attrs: []imap.MailboxAttr{imap.MailboxAttrHasNoChildren}}
	for _, b := range boxes {
		if len(b.Name) > len(info.Name) && b.Name[len(info.Name)] == mailstore.Delim && strings.HasPrefix(b.Name, info.Name) {
			l.Attrs[0] = imap.MailboxAttrHasChildren
			break
		}
	}
	if info.SpecialUse != "" {
		l.Attrs = append(l.Attrs, imap.MailboxAttr(info.SpecialUse))
	}
	return l
}

// Unselect implements imapserver.Session (UNSELECT, and CLOSE after its
// expunge).
func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	if fc := framer(s.conn.NetConn()); fc != nil {
		fc.setSelected(false)
	}
	if s.sel == nil {
		return
	}
	s.sel.mb.close(s.sel.v)
	s.srv.release(s.sel.mb)
	s.sel = nil
}

// Namespace implements imapserver.SessionNamespace: one personal namespace.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: mailstore.Delim}}}, nil
}

// current returns the selected mailbox, failing if it was deleted.
func (s *session) current() (*selected, error) {
	if s.sel == nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "no mailbox selected"}
	}
	s.sel.mb.mu.Lock()
	flooded := s.sel.v.flooded
	s.sel.mb.mu.Unlock()
	if flooded {
		return nil, s.endFlooded()
	}
	if deleted, renewed := s.sel.mb.isDeleted(); deleted {
		return nil, goneError(renewed)
	}
	return s.sel, nil
}

// goneError is the answer to a command in a selected mailbox that is gone
// for the session: deleted, or made again with another UIDVALIDITY
// (renewed), whose messages the session's UIDs do not name.
func goneError(renewed bool) error {
	text := "the selected mailbox was deleted (by this or another device)"
	if renewed {
		text = "the selected mailbox was made again with a new UIDVALIDITY; select it again"
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: text}
}

// selectedError is storeError for a read of the selected mailbox through
// sel.box. Where the store holds the mailbox with another UIDVALIDITY
// than the one selected, or no more, the read read nothing: the listing
// the session selected is retired (its sessions told the mailbox is
// gone, as Applied would tell them once it hears the commit that did it)
// and the command gets the answer of a session whose mailbox is gone.
func (s *session) selectedError(sel *selected, err error) error {
	renewed := errors.Is(err, mailstore.ErrUIDValidity)
	if !renewed && !errors.Is(err, mailstore.ErrNoMailbox) {
		return s.storeError(err, "")
	}
	s.srv.retire(sel.mb, renewed)
	_, renewed = sel.mb.isDeleted()
	return goneError(renewed)
}

// writable returns the selected mailbox if it may be changed.
func (s *session) writable() (*selected, error) {
	sel, err := s.current()
	if err != nil {
		return nil, err
	}
	if sel.readOnly {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "the mailbox is read-only (EXAMINE); SELECT it to change it"}
	}
	return sel, nil
}

func (s *session) noMailbox(name string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent,
		Text: fmt.Sprintf("no mailbox %s", s.quoteName(name))}
}

// damagedText is the answer to a command that met a store failure
// Config.StoreProblem knows (a damaged database); what the daemon's log
// and cspool status say names the file.
const damagedText = "This device's mail database is damaged. Its mail is all in the spool: " +
	"stop the cspool daemon, move the database aside, and start it again (the daemon's log and cspool status name the file)"

// storeError turns a mail store failure into an IMAP error, logging the
// detail.
func (s *session) storeError(err error, name string) error {
	if errors.Is(err, mailstore.ErrNoMailbox) {
		return s.noMailbox(name)
	}
	if errors.Is(err, devicedb.ErrDiskFull) {
		s.srv.log.Warn("the disk holding the database is full", "err", err)
		return diskFull("the command failed")
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		return err
	}
	if s.srv.cfg.StoreProblem != nil {
		if hint := s.srv.cfg.StoreProblem(err); hint != "" {
			if s.srv.damagedLogged.CompareAndSwap(false, true) {
				s.srv.log.Error("the local mail store cannot be read or written until this is fixed", "err", err, "hint", hint)
			}
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCorruption, Text: damagedText}
		}
	}
	s.srv.log.Error("mail store failure", "err", err)
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug,
		Text: "the local mail store failed; see the daemon's log"}
}
