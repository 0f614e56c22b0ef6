package outbox

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/submit"
	"cspool/internal/syncer"
)

// Which mailbox a filing goes to.
const (
	sentMailbox = iota
	inboxMailbox
)

// searchBack is how many of the newest UIDs of a mailbox are searched for
// an earlier copy when the mailbox is no longer the one noted at submission
// (renamed away, deleted, recreated).
const searchBack = 1000

// resolve finds the mailbox a filing goes to: INBOX, or the mailbox with
// the \Sent special use (else the one named Sent). nil: there is none.
func (o *Outbox) resolve(ctx context.Context, which int) (*mailstore.Mailbox, error) {
	if which == inboxMailbox {
		return o.cfg.Store.MailboxByID(ctx, mailstore.InboxID())
	}
	boxes, err := o.cfg.Store.Mailboxes(ctx)
	if err != nil {
		return nil, err
	}
	for i := range boxes {
		if boxes[i].SpecialUse == `\Sent` {
			return &boxes[i], nil
		}
	}
	for i := range boxes {
		if boxes[i].Name == "Sent" {
			return &boxes[i], nil
		}
	}
	return nil, nil
}

// mailboxMark notes where to look later for a copy: the mailbox's id and
// its UIDNEXT now. Without a mailbox, the search looks back searchBack.
func (o *Outbox) mailboxMark(ctx context.Context, which int) ([]byte, int64) {
	mb, err := o.resolve(ctx, which)
	if err != nil || mb == nil {
		return nil, 1
	}
	return append([]byte(nil), mb.ID[:]...), int64(mb.UIDNext)
}

// filing is one message to put into the log.
type filing struct {
	fid, qid  int64
	kind      int
	messageID string
	content   []byte // a Sent copy's, for a message submitted without Message-ID
	mailbox   []byte
	fromUID   int64
	data      []byte
	date      time.Time
}

// nextFiling returns the oldest filing not done, or nil.
func (o *Outbox) nextFiling(ctx context.Context) (*filing, error) {
	f := &filing{}
	var created, accepted int64
	err := o.db.QueryRowContext(ctx, `SELECT f.fid, f.qid, f.kind, f.message_id, f.mailbox, f.from_uid,
		CASE f.kind WHEN ? THEN m.data ELSE f.data END, CASE f.kind WHEN ? THEN m.content END, f.created, m.accepted
		FROM filings f JOIN messages m ON m.qid = f.qid WHERE f.done = 0 ORDER BY f.fid LIMIT 1`, fileSent, fileSent).
		Scan(&f.fid, &f.qid, &f.kind, &f.messageID, &f.mailbox, &f.fromUID, &f.data, &f.content, &created, &accepted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the filings: %w", err)
	}
	f.date = time.UnixMilli(created)
	if f.kind == fileSent {
		f.date = time.UnixMilli(accepted)
	}
	return f, nil
}

// uncertainError: an append whose outcome is not known (it may be in the
// log without being applied here yet).
type uncertainError struct{ err error }

func (e *uncertainError) Error() string { return e.err.Error() }
func (e *uncertainError) Unwrap() error { return e.err }

func (o *Outbox) fileLoop(ctx context.Context) {
	caughtUp, since := false, o.opened
	wait := time.Second
	purged := time.Time{}
	for {
		if now := o.now(); now.Sub(purged) > 10*time.Minute {
			if err := o.purge(ctx, now); err != nil && ctx.Err() == nil {
				o.log.Warn("purging the outbox", "err", err)
			}
			purged = now
		}
		f, err := o.nextFiling(ctx)
		if err == nil && f != nil && !caughtUp {
			// After a start, or an append of unknown outcome: what this
			// device appended before may not be applied here yet, and
			// the search before filing must see it.
			if err = o.catchUp(ctx, since); err == nil {
				caughtUp = true
			}
		}
		if err == nil && f != nil {
			err = o.file(ctx, f)
			var ue *uncertainError
			if errors.As(err, &ue) {
				caughtUp, since = false, time.Now()
			}
		}
		if ctx.Err() != nil {
			return
		}
		var pause time.Duration
		switch {
		case err != nil:
			o.log.Warn("filing into the log failed; retrying", "err", err, "in", wait)
			o.setError(fmt.Errorf("filing into the log: %w", err))
			pause = wait
			wait = min(wait*2, time.Minute)
		case f != nil:
			wait = time.Second
			continue
		default:
			pause = 10 * time.Minute
		}
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-o.fileKick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// catchUp waits until the device has applied the log up to the head the
// spool reported in an exchange after since: any append this device made
// before since is then applied here.
func (o *Outbox) catchUp(ctx context.Context, since time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		st := o.cfg.Log.Status()
		if st.Alarm != "" {
			return fmt.Errorf("%w: %s", syncer.ErrIntegrity, st.Alarm)
		}
		if st.LastContact.After(since) {
			return o.cfg.Log.WaitApplied(ctx, st.Head)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the spool: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// file puts f into its mailbox through the log, unless a copy is there.
func (o *Outbox) file(ctx context.Context, f *filing) error {
	which := inboxMailbox
	var flags []string
	if f.kind == fileSent {
		which, flags = sentMailbox, []string{`\Seen`}
		o.fileMu.Lock()
		defer o.fileMu.Unlock()
	}
	mb, err := o.resolve(ctx, which)
	if err != nil {
		return err
	}
	if mb == nil {
		if err := o.createSent(ctx); err != nil {
			return err
		}
		if mb, err = o.resolve(ctx, which); err != nil || mb == nil {
			return fmt.Errorf("no Sent mailbox after creating one: %v", err)
		}
	}
	found, err := o.search(ctx, mb, f)
	if err != nil {
		return err
	}
	if found != nil {
		o.log.Info("copy already in the mailbox; not filed again", "queue_id", f.qid, "mailbox", mb.Name)
		return o.markFiled(ctx, f, *found)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ms := f.date.UnixMilli()
	if ms == 0 {
		ms = 1
	}
	outs, err := o.cfg.Log.Submit(sctx, &command.Command{Kind: command.Append, Mailbox: mb.Name, MailboxID: mb.ID,
		Flags: flags, Date: ms, Body: f.data})
	switch {
	case errors.Is(err, syncer.ErrUnavailable), errors.Is(err, syncer.ErrOverQuota):
		// Nothing was appended: the copy stays here and is filed once the
		// spool answers or the user has made room.
		return err
	case err != nil:
		return &uncertainError{err}
	case len(outs) != 1:
		return &uncertainError{fmt.Errorf("%d outcomes for one append", len(outs))}
	}
	out := outs[0]
	if out.Status == mailstore.Rejected || len(out.Placed) != 1 {
		// The mailbox went away under the append, most likely: look
		// again next time.
		return fmt.Errorf("the append into %s was rejected: %s %s", mb.Name, out.Reason, out.Detail)
	}
	if f.kind == fileBounce {
		o.mu.Lock()
		o.bounced++
		o.mu.Unlock()
	}
	o.log.Info("filed", "queue_id", f.qid, "mailbox", mb.Name, "uid", out.Placed[0].UID, "pos", out.Pos)
	return o.markFiled(ctx, f, out.Placed[0].ID)
}

// createSent creates the Sent mailbox (a user deleted it).
func (o *Outbox) createSent(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	outs, err := o.cfg.Log.Submit(sctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Sent", SpecialUse: `\Sent`})
	if err != nil {
		return err
	}
	if len(outs) == 1 && outs[0].Status == mailstore.Rejected && outs[0].Reason != mailstore.ReasonMailboxExists {
		return fmt.Errorf("creating the Sent mailbox was rejected: %s", outs[0].Reason)
	}
	return nil
}

// search looks in mb, among the messages added since f's mark, for one
// with f's Message-ID; for a message submitted without Message-ID, for
// one without Message-ID and with its content (submit.ContentDigest).
// A Sent copy found must be no other submitted message's: two messages
// may carry one Message-ID (a client that reuses them, an edited message
// sent again), and each gets its copy.
func (o *Outbox) search(ctx context.Context, mb *mailstore.Mailbox, f *filing) (*command.ID, error) {
	from := mailstore.UID(max(1, int64(mb.UIDNext)-searchBack))
	if bytes.Equal(f.mailbox, mb.ID[:]) {
		from = mailstore.UID(f.fromUID)
	}
	if from >= mb.UIDNext {
		return nil, nil
	}
	var found *command.ID
	errFound := errors.New("found")
	err := o.cfg.Store.Fetch(ctx, mb.ID, mailstore.UIDSet{{Start: from, Stop: 0}}, mailstore.WantEnvelope,
		func(m *mailstore.Message) error {
			if m.Envelope == nil {
				return nil
			}
			env, err := mimeform.DecodeEnvelope(m.Envelope)
			if err != nil {
				return err
			}
			if env == nil {
				return nil
			}
			if env.MessageID == f.messageID {
				if f.kind == fileSent && o.isSentCopy(ctx, m.ID, f.qid) {
					// Another message with this Message-ID (a
					// client that reuses them, or a message edited
					// and sent again): its copy is not this one's.
					return nil
				}
				id := m.ID
				found = &id
				return errFound
			}
			if f.content == nil || env.MessageID != "" {
				return nil
			}
			raw, err := m.LoadRaw(ctx)
			if err != nil {
				return err
			}
			if !bytes.Equal(submit.ContentDigest(raw), f.content) || o.isSentCopy(ctx, m.ID, f.qid) {
				return nil
			}
			id := m.ID
			found = &id
			return errFound
		})
	if err != nil && !errors.Is(err, errFound) {
		return nil, fmt.Errorf("searching %s: %w", mb.Name, err)
	}
	return found, nil
}

// isSentCopy reports whether id is the Sent copy of a submitted message
// other than qid.
func (o *Outbox) isSentCopy(ctx context.Context, id command.ID, qid int64) bool {
	var n int
	err := o.db.QueryRowContext(ctx, "SELECT count(*) FROM messages WHERE sent_copy = ? AND qid != ?", id[:], qid).Scan(&n)
	return err != nil || n > 0
}

func (o *Outbox) markFiled(ctx context.Context, f *filing, id command.ID) error {
	return inTx(ctx, o.db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE filings SET done = 1, placed = ? WHERE fid = ?", id[:], f.fid); err != nil {
			return err
		}
		if f.kind == fileSent {
			if _, err := tx.ExecContext(ctx, "UPDATE messages SET sent_copy = ? WHERE qid = ?", id[:], f.qid); err != nil {
				return err
			}
		}
		return nil
	})
}

// Submitter is what the IMAP server submits its commands through
// (imapd.Submitter).
type Submitter interface {
	Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error)
}

// SentFilter wraps the IMAP server's Submitter so that a client saving its
// own copy of a message it just sent does not end up with two in Sent: an
// APPEND into the Sent mailbox of a message with the Message-ID of one
// submitted through this device within DuplicateWindow, whose copy the
// outbox has already filed, is answered with that copy and appends
// nothing. A COPY into Sent of such messages (Claws Mail keeps what it
// sends in a Queue folder on the server and copies it to Sent once sent)
// is answered the same way, when every message it names is one, none of
// them in Sent already. If the outbox has not filed it yet, the client's
// copy is added and the outbox later finds it and files none; so too when
// the client appended it before submitting the message (s-nail), within
// DuplicateWindow: the APPEND's UID is remembered for the submission.
func (o *Outbox) SentFilter(next Submitter) Submitter {
	return sentFilter{o: o, next: next}
}

type sentFilter struct {
	o    *Outbox
	next Submitter
}

func (s sentFilter) Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error) {
	if len(cmds) == 1 && cmds[0].Kind == command.Copy {
		return s.copy(ctx, cmds[0])
	}
	if len(cmds) != 1 || cmds[0].Kind != command.Append {
		return s.next.Submit(ctx, cmds...)
	}
	c := cmds[0]
	mb, err := s.o.resolve(ctx, sentMailbox)
	if err != nil || mb == nil || c.MailboxID != mb.ID {
		return s.next.Submit(ctx, cmds...)
	}
	k := copyKey{mid: submit.MessageID(c.Body)}
	if k.mid == "" {
		k.content = submit.ContentDigest(c.Body)
	}
	if s.o.recent(ctx, k) {
		s.o.fileMu.Lock()
		defer s.o.fileMu.Unlock()
		if id := s.o.sentCopyOf(ctx, k, c.Body); id != nil {
			if p, err := s.o.cfg.Store.Locate(ctx, *id); err == nil && p.Mailbox == mb.ID {
				s.o.log.Info("client's copy of a sent message not appended: the outbox filed it already", "mailbox", mb.Name, "uid", p.UID)
				return []mailstore.Outcome{{Kind: command.Append, Status: mailstore.Applied,
					Placed: []mailstore.Placement{p}}}, nil
			}
		}
	}
	outs, err := s.next.Submit(ctx, cmds...)
	if err == nil && len(outs) == 1 && len(outs[0].Placed) == 1 && outs[0].Placed[0].Mailbox == mb.ID {
		s.o.noteClientCopy(ctx, k, mb.ID, outs[0].Placed[0].UID)
	}
	return outs, err
}

// copyKey is how a client's copy in Sent is told for a submitted message:
// by its Message-ID, or, when it has none, by its content
// (submit.ContentDigest), which a message the listener gave a Message-ID
// was queued with.
type copyKey struct {
	mid     string
	content []byte
}

// keyOf is the key a client's copy of m has.
func keyOf(m *submit.Message) copyKey {
	if m.Content != nil {
		return copyKey{content: m.Content}
	}
	return copyKey{mid: m.MessageID}
}

// where is the condition on a table's message_id and content columns
// that matches k, and its arguments.
func (k copyKey) where() (string, []any) {
	if k.mid != "" {
		return "message_id = ?", []any{k.mid}
	}
	return "content = ?", []any{k.content}
}

// maxEarly bounds the client copies remembered (the oldest go first).
const maxEarly = 1000

// noteClientCopy records, in the outbox, a client's copy of message k
// appended into Sent as uid, for a submission of k within DuplicateWindow
// after it (earlyCopyUID); it is kept across a restart of the daemon.
// A failure to record it is logged: the client's APPEND was made, and at
// worst Sent gets the outbox's copy too.
func (o *Outbox) noteClientCopy(ctx context.Context, k copyKey, mailbox command.ID, uid mailstore.UID) {
	now := o.now()
	err := inTx(context.WithoutCancel(ctx), o.db, func(tx *sql.Tx) error {
		if _, err := tx.Exec("DELETE FROM client_copies WHERE at < ? OR at > ?",
			now.Add(-o.cfg.DuplicateWindow).UnixMilli(), now.Add(o.cfg.DuplicateWindow).UnixMilli()); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM client_copies WHERE rowid IN
			(SELECT rowid FROM client_copies ORDER BY at DESC, rowid DESC LIMIT -1 OFFSET ?)`, maxEarly-1); err != nil {
			return err
		}
		_, err := tx.Exec("INSERT INTO client_copies (message_id, content, mailbox, uid, at) VALUES (?, ?, ?, ?, ?)",
			k.mid, k.content, mailbox[:], int64(uid), now.UnixMilli())
		return err
	})
	if err != nil {
		o.log.Error("recording a client's copy in Sent", "uid", uid, "err", err)
	}
}

// earlyCopyUID is the lowest UID in the Sent mailbox sentBox of a client's
// copy of message k appended within DuplicateWindow before now, or 0.
func (o *Outbox) earlyCopyUID(ctx context.Context, k copyKey, sentBox []byte, now time.Time) int64 {
	if k.mid == "" && k.content == nil {
		return 0
	}
	cond, args := k.where()
	var uid sql.NullInt64
	err := o.db.QueryRowContext(ctx, "SELECT min(uid) FROM client_copies WHERE "+cond+" AND mailbox = ? AND at >= ?",
		append(args, sentBox, now.Add(-o.cfg.DuplicateWindow).UnixMilli())...).Scan(&uid)
	if err != nil || !uid.Valid {
		return 0
	}
	return uid.Int64
}

// copy answers a Copy into Sent whose every message is a client's copy of
// one the outbox has filed there already with those copies, and passes
// any other on.
func (s sentFilter) copy(ctx context.Context, c *command.Command) ([]mailstore.Outcome, error) {
	mb, err := s.o.resolve(ctx, sentMailbox)
	if err != nil || mb == nil || c.MailboxID != mb.ID || len(c.IDs) == 0 {
		return s.next.Submit(ctx, c)
	}
	mids := make([]string, len(c.IDs))
	for i, id := range c.IDs {
		m, err := s.o.cfg.Store.MessageByID(ctx, id, mailstore.WantEnvelope)
		if err != nil || m.Envelope == nil {
			return s.next.Submit(ctx, c)
		}
		env, err := mimeform.DecodeEnvelope(m.Envelope)
		if err != nil || env == nil || env.MessageID == "" || !s.o.recent(ctx, copyKey{mid: env.MessageID}) {
			return s.next.Submit(ctx, c)
		}
		mids[i] = env.MessageID
	}
	s.o.fileMu.Lock()
	defer s.o.fileMu.Unlock()
	if outs, ok, err := s.copySubmitted(ctx, c, mb, mids); ok || err != nil {
		return outs, err
	}
	placed := make([]mailstore.Placement, len(c.IDs))
	answered := make(map[command.ID]bool, len(c.IDs))
	for i, id := range c.IDs {
		filed := s.o.sentCopy(ctx, copyKey{mid: mids[i]})
		if filed == nil || answered[*filed] {
			// Not filed yet, or two messages copied with one
			// Message-ID: each gets a copy of its own.
			return s.next.Submit(ctx, c)
		}
		answered[*filed] = true
		p, err := s.o.cfg.Store.Locate(ctx, *filed)
		if err != nil || p.Mailbox != mb.ID {
			return s.next.Submit(ctx, c)
		}
		if from, err := s.o.cfg.Store.Locate(ctx, id); err != nil || from.Mailbox == mb.ID {
			// Copied within Sent: the user means a second copy.
			return s.next.Submit(ctx, c)
		}
		p.Source = id
		placed[i] = p
	}
	for _, p := range placed {
		s.o.log.Info("client's copy of a sent message not copied: the outbox filed it already", "mailbox", mb.Name, "uid", p.UID)
	}
	return []mailstore.Outcome{{Kind: command.Copy, Status: mailstore.Applied, Placed: placed}}, nil
}

// copySubmitted answers a Copy into Sent of client copies of messages
// submitted within DuplicateWindow of which none is filed yet, none is
// in Sent already and no two share a Message-ID, by appending the
// messages as they were submitted, and reports whether it did. A client
// that keeps what it sends in a queue folder (Claws Mail) copies it to
// Sent once sent: the copy made would be its queued message, lines of
// its own above the header (AF:, R: with every recipient, Bcc ones
// included, ..., X-Claws-End-Special-Headers). Called with fileMu held.
func (s sentFilter) copySubmitted(ctx context.Context, c *command.Command, mb *mailstore.Mailbox, mids []string) ([]mailstore.Outcome, bool, error) {
	seen := make(map[string]bool, len(mids))
	appends := make([]*command.Command, len(mids))
	for i, mid := range mids {
		if seen[mid] || s.o.sentCopy(ctx, copyKey{mid: mid}) != nil {
			return nil, false, nil
		}
		seen[mid] = true
		if from, err := s.o.cfg.Store.Locate(ctx, c.IDs[i]); err != nil || from.Mailbox == mb.ID {
			return nil, false, nil
		}
		var data []byte
		var accepted int64
		err := s.o.db.QueryRowContext(ctx, "SELECT data, accepted FROM messages WHERE message_id = ? AND accepted >= ? ORDER BY qid DESC LIMIT 1",
			mid, s.o.now().Add(-s.o.cfg.DuplicateWindow).UnixMilli()).Scan(&data, &accepted)
		if err != nil {
			return nil, false, nil
		}
		appends[i] = &command.Command{Kind: command.Append, Mailbox: mb.Name, MailboxID: mb.ID,
			Flags: []string{`\Seen`}, Date: max(accepted, 1), Body: data}
	}
	outs, err := s.next.Submit(ctx, appends...)
	if err != nil {
		return nil, true, err
	}
	if len(outs) != len(appends) {
		return nil, true, fmt.Errorf("%d outcomes for %d appends", len(outs), len(appends))
	}
	placed := make([]mailstore.Placement, len(appends))
	for i, out := range outs {
		if out.Status == mailstore.Rejected || len(out.Placed) != 1 {
			// Sent went away under it: the outcome says so.
			return []mailstore.Outcome{{Kind: command.Copy, Status: out.Status, Reason: out.Reason, Detail: out.Detail}}, true, nil
		}
		placed[i] = out.Placed[0]
		placed[i].Source = c.IDs[i]
		s.o.log.Info("client's copy of a sent message copied as submitted, without the client's own lines", "mailbox", mb.Name, "uid", placed[i].UID)
	}
	return []mailstore.Outcome{{Kind: command.Copy, Status: mailstore.Applied, Placed: placed}}, true, nil
}

// recent reports whether message k was submitted within DuplicateWindow.
func (o *Outbox) recent(ctx context.Context, k copyKey) bool {
	cond, args := k.where()
	var n int
	err := o.db.QueryRowContext(ctx, "SELECT count(*) FROM messages WHERE "+cond+" AND accepted >= ?",
		append(args, o.now().Add(-o.cfg.DuplicateWindow).UnixMilli())...).Scan(&n)
	return err == nil && n > 0
}

// sentCopyOf is the id of the filed Sent copy of the newest message k
// submitted within DuplicateWindow whose content is body's
// (submit.ContentDigest: the header but Message-ID, Date, Bcc and
// Resent-Bcc, and the body), or nil. A client's copy with the Message-ID
// of a message sent but another content is another message (a client
// that reuses Message-IDs, a copy kept unencrypted of a message sent
// encrypted, one kept without its attachments): it is appended. Before,
// it was answered with the sent message's copy and appended nothing: the
// client's message was lost.
func (o *Outbox) sentCopyOf(ctx context.Context, k copyKey, body []byte) *command.ID {
	if k.mid == "" {
		// Told by its content already.
		return o.sentCopy(ctx, k)
	}
	rows, err := o.db.QueryContext(ctx, "SELECT data, sent_copy FROM messages WHERE message_id = ? AND sent_copy IS NOT NULL AND accepted >= ? ORDER BY qid DESC",
		k.mid, o.now().Add(-o.cfg.DuplicateWindow).UnixMilli())
	if err != nil {
		return nil
	}
	defer rows.Close()
	want := submit.ContentDigest(body)
	for rows.Next() {
		var data, b []byte
		if rows.Scan(&data, &b) != nil || len(b) != command.IDSize {
			return nil
		}
		if bytes.Equal(submit.ContentDigest(data), want) {
			var id command.ID
			copy(id[:], b)
			return &id
		}
	}
	return nil
}

// sentCopy is the id of the filed Sent copy of the newest message k, or
// nil.
func (o *Outbox) sentCopy(ctx context.Context, k copyKey) *command.ID {
	cond, args := k.where()
	var b []byte
	err := o.db.QueryRowContext(ctx, "SELECT sent_copy FROM messages WHERE "+cond+" AND sent_copy IS NOT NULL ORDER BY qid DESC LIMIT 1", args...).Scan(&b)
	if err != nil || len(b) != command.IDSize {
		return nil
	}
	var id command.ID
	copy(id[:], b)
	return &id
}
