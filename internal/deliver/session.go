package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/keys"
)

// errNotLocalDomain: the recipient's domain is not one of LMTPOptions.Domains.
var errNotLocalDomain = errors.New("recipient domain is not local")

// Replies (RFC 2033 section 4.2, RFC 3463 enhanced codes). The peer sees the
// short text; the log gets the detail.
var (
	replyNoUser    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	replyNoDomain  = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 2}, Message: "recipient domain not handled here"}
	replyTooLarge  = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "message too large"}
	replyResources = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "insufficient system resources, try again later"}
	replyTemporary = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary failure, try again later"}
	replyOverQuota = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full, try again later"}
)

// replyBadRecipient refuses a recipient with a control character (C0, DEL
// or C1): RFC 5321 section 4.1.2 allows none in a path, quoted or not, and
// no user's address has one. The library answered RCPT and, after DATA,
// the recipient's reply with the address as the client wrote it: a bare
// CR, a NUL or an escape sequence went back raw. A sender so written is
// taken (refused, the message would bounce to it), and its trace field
// made printable (TestLMTPTrace).
var replyBadRecipient = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "the address holds a control character"}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, isControl)
}

// isControl reports whether r is a C0 control, DEL or a C1 control.
func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r < 0xa0 }

// replyFor maps a delivery error onto its LMTP reply.
func replyFor(err error) *smtp.SMTPError {
	if errors.Is(err, errNotLocalDomain) {
		return replyNoDomain
	}
	switch KindOf(err) {
	case KindUnknownUser:
		return replyNoUser
	case KindTooLarge:
		return replyTooLarge
	case KindResources:
		return replyResources
	case KindOverQuota:
		return replyOverQuota
	}
	return replyTemporary
}

func replyDelivered(pos uint64) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("delivered at log position %d", pos)}
}

// rcpt is one accepted RCPT: the address as the client wrote it (the key
// for StatusCollector) and the user it resolved to.
type rcpt struct {
	addr string
	user string
	key  keys.PublicKey
}

// session is one LMTP connection.
type session struct {
	l     *LMTP
	conn  *lmtpConn
	id    string // random, for logs
	n     int    // messages received on this connection
	size  int64  // SIZE declared at MAIL FROM, 0 if none
	from  string // the envelope sender, "" for <>
	inTx  bool   // a MAIL was accepted and no RSET or message ended it
	rcpts []rcpt
}

var _ smtp.LMTPSession = (*session)(nil)

func (s *session) Reset()        { s.rcpts, s.size, s.from, s.inTx = nil, 0, "", false }
func (s *session) Logout() error { return nil }

// replyNestedMail refuses a MAIL inside a transaction (RFC 5321 section
// 4.1.4: MAIL only when no transaction is in progress). go-smtp passes it
// on and keeps the recipients it has counted: taking it as a new
// transaction, the session forgot recipients go-smtp still answers for
// after DATA, each with "250 OK: queued", their message stored nowhere.
var replyNestedMail = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
	Message: "a transaction is in progress: RSET first, or end it with DATA"}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.inTx {
		return replyNestedMail
	}
	s.Reset()
	s.from = from
	if opts != nil && opts.Size > s.l.opts.MaxMessageBytes {
		s.l.opts.Metrics.Delivery(OutcomeTooLarge)
		return replyTooLarge
	}
	if opts != nil && opts.Size > 0 {
		s.size = opts.Size
	}
	s.inTx = true
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if hasControl(to) {
		s.l.log.Info("lmtp recipient refused", "session", s.id, "code", replyBadRecipient.Code, "error", fmt.Sprintf("a control character in an address of %d bytes", len(to)))
		return replyBadRecipient
	}
	ctx, cancel := context.WithTimeout(s.l.ctx, s.l.opts.DeliveryTimeout)
	defer cancel()
	user, key, err := s.l.resolve(ctx, to)
	if err != nil {
		reply := replyFor(err)
		why := err.Error()
		if errors.Is(err, keys.ErrBadUserName) {
			// No user's name: whatever the sender wrote there, which
			// the log does not keep (docs/DELIVERY.md).
			why = fmt.Sprintf("%v (an address of %d bytes)", keys.ErrBadUserName, len(to))
		}
		s.l.log.Info("lmtp recipient refused", "session", s.id, "code", reply.Code, "error", why)
		s.l.opts.Metrics.Delivery(OutcomeOf(err))
		return reply
	}
	s.rcpts = append(s.rcpts, rcpt{addr: to, user: user, key: key})
	return nil
}

// Data is not used in LMTP mode, where the library calls LMTPData.
func (s *session) Data(io.Reader) error {
	return errors.New("lmtp: per-recipient delivery required")
}

// target is one user of a message and the RCPT addresses that reached it.
type target struct {
	user  string
	key   keys.PublicKey
	addrs []string
}

func (s *session) targets() []*target {
	var ts []*target
	byUser := map[string]*target{}
	for _, r := range s.rcpts {
		t := byUser[r.user]
		if t == nil {
			t = &target{user: r.user, key: r.key}
			byUser[r.user] = t
			ts = append(ts, t)
		}
		t.addrs = append(t.addrs, r.addr)
	}
	return ts
}

// LMTPData reads the message and delivers it to every user, concurrently,
// setting each recipient's status as soon as its entry is durable. After
// DATA, r is the library's reader, which is not used: the message is read
// from the connection with an smtpdata.Reader (see lmtpConn). After BDAT, r is the
// content of the chunks.
func (s *session) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	s.n++
	s.conn.dataStart(s.l.opts.ReadTimeout)
	defer s.conn.dataEnd()
	ts := s.targets()
	workers := min(len(ts), s.l.opts.Parallel)
	in := &inbox{res: &reservation{l: s.l}, pool: &s.l.bufs, factor: costFactor(workers), limit: s.l.opts.MaxMessageBytes, hint: s.size}
	// After every recipient's delivery below has returned: none uses the
	// message any more.
	defer in.done()
	var err error
	if _, chunks := r.(*io.PipeReader); chunks {
		err = in.readFrom(r)
	} else {
		dr := s.conn.ReadData()
		err = in.readFrom(dr)
		s.conn.DoneData(dr)
	}
	if err != nil {
		err = fmt.Errorf("reading message: %w", err)
	} else {
		err = in.err
	}
	if err != nil {
		s.failAll(ts, status, err)
		return nil
	}
	msg := in.buf
	received := s.l.d.now()

	ctx, cancel := context.WithTimeout(s.l.ctx, s.l.opts.DeliveryTimeout)
	defer cancel()
	one := func(t *target) {
		start := time.Now()
		// LMTP's lines end in CRLF; Delivered-To is the first address
		// that reached the user.
		trace := traceFields(Envelope{Sender: s.from, HasSender: true, Recipient: t.addrs[0]}, "\r\n")
		pos, sealed, err := s.l.d.deliverTo(ctx, t.user, t.key, trace, msg, received, &s.l.bufs)
		var reply *smtp.SMTPError
		if err != nil {
			reply = replyFor(err)
		} else {
			reply = replyDelivered(pos)
		}
		s.logOutcome(t, sealed, reply.Code, pos, time.Since(start), err)
		for _, a := range t.addrs {
			status.SetStatus(a, reply)
		}
	}
	if len(ts) == 1 {
		// Most mail has one user here: no goroutine to start for it.
		one(ts[0])
		return nil
	}
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for _, t := range ts {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			one(t)
		}()
	}
	wg.Wait()
	return nil
}

// failAll gives every recipient the reply for err.
func (s *session) failAll(ts []*target, status smtp.StatusCollector, err error) {
	reply := replyFor(err)
	for _, t := range ts {
		s.logOutcome(t, 0, reply.Code, 0, 0, err)
		for _, a := range t.addrs {
			status.SetStatus(a, reply)
		}
	}
}

// logOutcome writes the one log line of a recipient's outcome: no contents,
// no addresses beyond the user name, and of the size only the sealed one
// the spool keeps (padded, docs/FORMAT.md §2), never the message's own.
func (s *session) logOutcome(t *target, sealed int, code int, pos uint64, took time.Duration, err error) {
	s.l.opts.Metrics.Delivery(OutcomeOf(err))
	attrs := []slog.Attr{
		slog.String("session", s.id),
		slog.Int("seq", s.n),
		slog.String("user", t.user),
		slog.Int("code", code),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
		s.l.log.LogAttrs(context.Background(), slog.LevelWarn, "lmtp delivery failed", attrs...)
		return
	}
	attrs = append(attrs, slog.Uint64("pos", pos), slog.Int("sealed_bytes", sealed), slog.Duration("took", took))
	s.l.log.LogAttrs(context.Background(), slog.LevelInfo, "lmtp delivered", attrs...)
}

// resolve maps an RCPT address to a user and the user's key: the local part
// as written, then in lower case, then (with a recipient delimiter) the same
// for the part before the delimiter.
func (l *LMTP) resolve(ctx context.Context, addr string) (string, keys.PublicKey, error) {
	local, domain := addr, ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], addr[i+1:]
	}
	if domain != "" && l.domains != nil && !l.domains[strings.ToLower(strings.TrimSuffix(domain, "."))] {
		return "", keys.PublicKey{}, errNotLocalDomain
	}
	candidates := []string{local, keys.FoldCase(local)}
	if d := l.opts.RecipientDelimiter; d != "" {
		if i := strings.IndexAny(local, d); i > 0 {
			base := local[:i]
			candidates = append(candidates, base, keys.FoldCase(base))
		}
	}
	var firstErr error
	tried := map[string]bool{}
	for _, c := range candidates {
		if tried[c] {
			continue
		}
		tried[c] = true
		if err := keys.CheckUserName(c); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: %w", keys.ErrUnknownUser, err)
			}
			continue
		}
		key, err := l.d.Users.Lookup(ctx, c)
		if err == nil {
			return c, key, nil
		}
		if !errors.Is(err, keys.ErrUnknownUser) {
			return "", keys.PublicKey{}, fmt.Errorf("looking up recipient %q: %w", c, err)
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if fd, ok := l.d.Users.(FoldedDirectory); ok && errors.Is(firstErr, keys.ErrUnknownUser) {
		// A user with capitals in its name, the address folded to
		// lower case by the mail server in front.
		for _, c := range candidates {
			if keys.CheckUserName(c) != nil {
				continue
			}
			user, key, err := fd.LookupFolded(ctx, keys.FoldCase(c))
			if err == nil {
				return user, key, nil
			}
			if !errors.Is(err, keys.ErrUnknownUser) {
				return "", keys.PublicKey{}, fmt.Errorf("looking up recipient %q: %w", c, err)
			}
		}
	}
	return "", keys.PublicKey{}, firstErr
}
