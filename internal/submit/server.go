package submit

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"cspool/internal/loginguard"
	"cspool/internal/smtpdata"
)

// Queue keeps submitted messages until they are relayed (*outbox.Outbox).
type Queue interface {
	// Enqueue stores m durably (on disk, synced) and returns its queue id.
	// The client gets 250 only after it returned nil.
	Enqueue(ctx context.Context, m *Message) (id string, err error)
}

// Message is one submitted message with its envelope.
type Message struct {
	From       string      // envelope sender, one of the identities
	Recipients []Recipient // in RCPT order, no duplicates
	// Data is the message as the client sent it, Bcc included, with the
	// Message-ID and Date fields added when it lacked them.
	Data      []byte
	MessageID string // without angle brackets
	// Content is set when the listener added the Message-ID: the
	// message's ContentDigest, by which a copy the client saves in Sent
	// (without a Message-ID, as it wrote the message) is told.
	Content []byte
	// Added is how many bytes the listener put at the top of Data (the
	// Message-ID and Date fields it added): Data[Added:] is the message
	// as the client sent it, the same when the client sends it again.
	Added int
	// DateAdded is set when the client's message had no Date field.
	DateAdded bool
	// UTF8 is set when the client asked for SMTPUTF8 (RFC 6531).
	UTF8 bool
	// Body is the BODY parameter: "", 7BIT or 8BITMIME.
	Body string
	// Return and EnvelopeID are the DSN parameters RET and ENVID of MAIL
	// (RFC 3461), passed on to the smarthost.
	Return     string
	EnvelopeID string
}

// Recipient is one RCPT with its DSN parameters (RFC 3461).
type Recipient struct {
	Address string
	Notify  []string // NEVER, or some of SUCCESS, FAILURE, DELAY
	// ORCPT is the original recipient as "type;address", e.g.
	// "rfc822;bob@example.org" ("" when not given).
	ORCPT string
}

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// User and Password are the login (the IMAP ones). An empty Password is
	// refused unless AllowEmptyPassword is set.
	User               string
	Password           string
	AllowEmptyPassword bool
	// Identities are the addresses the user may send as (required).
	Identities []string
	Queue      Queue // required
	// Hostname is announced in the greeting and used in added Message-IDs.
	// Empty means "localhost".
	Hostname string
	// MaxMessageBytes is the largest message accepted (SIZE); larger ones
	// get 552 5.3.4. Zero means 50 MiB.
	MaxMessageBytes int64
	// DataMemory bounds the bytes of messages being received the server
	// holds at once, all connections together: a message takes room from
	// it as its bytes arrive, in steps, up to MaxMessageBytes, and gives
	// it back once answered; one whose next step does not fit waits,
	// unread, until it does (see room). Zero means twice
	// MaxMessageBytes; it is raised to MaxMessageBytes if below.
	DataMemory int64
	// DataIdleTimeout bounds the wait for the next bytes of a message
	// being received (after DATA, or between and inside BDAT chunks); a
	// client that sends nothing for it gets 421 4.4.2 and the connection
	// is closed, its room given back. Zero means 1 minute.
	DataIdleTimeout time.Duration
	// MaxRecipients is the most RCPT per message; more get 452 4.5.3. Zero
	// means 100.
	MaxRecipients int
	// TLS, if set, is the server's TLS configuration: Serve offers
	// STARTTLS with it and ServeTLS speaks TLS from the first byte
	// (submissions, RFC 8314). With it, a login over a connection without
	// TLS from a client not on a loopback address is refused (AUTH is not
	// offered before STARTTLS; 538 5.7.11). Nil: no TLS, logins are taken
	// in the clear.
	TLS *tls.Config
	// Login slows down password guessing, as for IMAP; the zero value
	// takes the defaults documented on loginguard.Limits.
	Login loginguard.Limits
	// ReadTimeout bounds the wait for each command, and the time a message
	// takes to arrive, from DATA or its first BDAT to its end, not
	// counting the waits for room. Zero means 10 minutes.
	ReadTimeout time.Duration
	// WriteTimeout bounds each reply. Zero means 1 minute.
	WriteTimeout time.Duration
	// EnqueueTimeout bounds storing one message. Zero means 1 minute.
	EnqueueTimeout time.Duration
	// Logger gets one line per message and connection errors; never
	// message contents or addresses. Nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock for added Date fields; nil: time.Now.
	Now func() time.Time
}

// Server is a submission server. Create it with New.
type Server struct {
	cfg        Config
	log        *slog.Logger
	srv        *smtp.Server
	guard      *loginguard.Guard
	identities map[string]bool
	ctx        context.Context // cancelled by Close
	cancel     context.CancelFunc
	closing    atomic.Bool
	room       *room // Config.DataMemory

	// mu guards listeners, those Serve and ServeTLS were given, which
	// Close closes itself: go-smtp's Close closes only the listeners its
	// Serve had taken, so a Serve whose goroutine started after Close
	// would wait in Accept for ever, and so would whoever waits for it.
	mu        sync.Mutex
	listeners []net.Listener
}

// fill gives the fields left zero their documented defaults.
func (c *Config) fill() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 50 << 20
	}
	if c.DataMemory == 0 {
		c.DataMemory = 2 * c.MaxMessageBytes
	}
	c.DataMemory = max(c.DataMemory, c.MaxMessageBytes)
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = 100
	}
	if c.DataIdleTimeout <= 0 {
		c.DataIdleTimeout = time.Minute
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Minute
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = time.Minute
	}
	if c.EnqueueTimeout <= 0 {
		c.EnqueueTimeout = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// New checks cfg and returns a Server; call Serve to accept connections.
func New(cfg Config) (*Server, error) {
	if cfg.Queue == nil {
		return nil, errors.New("submit: a queue is required")
	}
	if cfg.User == "" {
		return nil, errors.New("submit: a user name is required")
	}
	if cfg.Password == "" && !cfg.AllowEmptyPassword {
		return nil, errors.New("submit: an empty password is not allowed (set AllowEmptyPassword to allow it)")
	}
	ids, err := IdentitySet(cfg.Identities)
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	cfg.fill()
	log := cfg.Logger
	s := &Server{cfg: cfg, log: log.With("component", "smtp"), identities: ids, room: newRoom(cfg.DataMemory, cfg.MaxMessageBytes)}
	s.guard = loginguard.New(cfg.Login, s.log, "SMTP")
	s.ctx, s.cancel = context.WithCancel(context.Background())
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	// The limit itself, which EHLO's SIZE names (RFC 1870): the session
	// reads DATA (smtpdata) and holds the limit itself; the library
	// checks MAIL's SIZE and the sum of BDAT chunks against it. It was
	// one byte over, from when the library's DATA reader read the
	// message, and SIZE named a size that was then refused.
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	// Command lines only: the message after DATA is read by the session
	// (smtpdata), not by the library.
	srv.MaxLineLength = 4096
	srv.AllowInsecureAuth = true // localhost; see docs/SENDING.md
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.ErrorLog = errorLog{s.guard}
	s.srv = srv
	return s, nil
}

// IdentitySet checks addresses and returns them as a set, lower-cased.
func IdentitySet(addrs []string) (map[string]bool, error) {
	if len(addrs) == 0 {
		return nil, errors.New("at least one identity (an address to send as) is required")
	}
	set := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		local, domain, ok := strings.Cut(a, "@")
		if !ok || local == "" || domain == "" || strings.ContainsAny(a, " \t\r\n<>,;") || checkAddress("identity", a, true) != nil {
			return nil, fmt.Errorf("identity %q is not an address like name@example.org", a)
		}
		set[foldASCII(a)] = true
	}
	return set, nil
}

// foldASCII lower-cases the ASCII letters of an address and nothing else.
// strings.ToLower also maps other letters onto ASCII ones (U+0130, a
// capital I with a dot, to i; U+212A, the Kelvin sign, to k), so
// "al\u0130ce@example.org", another address, passed for alice's.
func foldASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Serve accepts connections on ln until Close, offering STARTTLS when
// Config.TLS is set; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("smtp submission listening", "addr", ln.Addr().String(), "starttls", s.cfg.TLS != nil)
	return s.serve(tlsListener{Listener: ln, tls: s.cfg.TLS, requireTLS: s.cfg.TLS != nil, tooLarge: s.tooLargeLine()})
}

// HasTLS reports whether the server was given a TLS configuration.
func (s *Server) HasTLS() bool { return s.cfg.TLS != nil }

// ServeTLS is Serve speaking TLS from the first byte with Config.TLS,
// which must be set.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("submit: ServeTLS needs Config.TLS")
	}
	s.log.Info("smtp submission listening", "addr", ln.Addr().String(), "tls", true)
	return s.serve(tlsListener{Listener: tls.NewListener(ln, s.cfg.TLS), requireTLS: true, tooLarge: s.tooLargeLine()})
}

func (s *Server) serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.srv.Serve(&loginguard.Listener{Listener: ln, Guard: s.guard, Bye: func(c net.Conn, why loginguard.EndReason) {
		line := fmt.Sprintf("421 4.4.2 No login within %v; closing the connection", s.guard.Limits().LoginDeadline)
		if why == loginguard.PushedOut {
			line = "421 4.7.0 Too many connections are waiting to log in; closing the one that waited longest"
		}
		if tc, ok := c.(*tlsConn); ok {
			tc.bye(line)
		} else {
			c.Close()
		}
	}})
	if s.closing.Load() || errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the listener, closes every connection and cancels messages
// being stored (their clients get no 250).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing.Store(true)
	listeners := s.listeners
	s.mu.Unlock()
	s.cancel()
	s.guard.Close()
	err := s.srv.Close()
	// After the library's Close: a Serve that meets its listener closed
	// then returns nil (the library's done is closed).
	for _, ln := range listeners {
		ln.Close()
	}
	return err
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	// The guard's connection on top (once it ends the connection, go-smtp
	// reads nothing more), the message reader's under it.
	// Under them the TLS layer (tlsConn), whose smtpdata.Conn the
	// session reads the message after DATA from itself (go-smtp's reader
	// mishandles bare CRs, see package smtpdata).
	gc, _ := c.Conn().(*loginguard.Conn)
	var tc *tlsConn
	if gc != nil {
		tc, _ = gc.Conn.(*tlsConn)
	}
	if tc == nil {
		return nil, errors.New("submit: connection not from Serve's listener")
	}
	return &session{srv: s, data: tc.Conn, conn: gc, tls: tc}, nil
}

func (s *Server) allowed(addr string) bool { return s.identities[foldASCII(addr)] }

// session is one connection's state.
type session struct {
	srv  *Server
	conn *loginguard.Conn // what go-smtp reads from
	tls  *tlsConn         // under it: STARTTLS
	data *smtpdata.Conn   // under that: the message after DATA is read here

	authed   bool
	failures int  // failed logins on this connection
	closing  bool // failed MaxFailures times: ends after this reply

	mail  *Message // the transaction after MAIL, nil before
	rcpts map[string]bool
}

var (
	errLoginsWaiting = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed logins from your address; try again later"}
	errConnClosing = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message: "Too many failed logins; the connection is closing"}
	errSessions = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many connections are logged in; closing the connection, try again later"}
	errAuthFirst = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required: log in with the IMAP user and password"}
	errNotIdentity = func(what string) error {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: what + " is not one of your identities (see --identity)"}
	}
)

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

// errEncryptionRequired refuses, unchecked, a login in the clear from
// another machine when the server has TLS (RFC 4954 section 6).
var errEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11},
	Message: "Encryption required: STARTTLS first, or use the submissions port"}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.tls.loginAllowed() {
		return nil, errEncryptionRequired
	}
	switch mech {
	case sasl.Plain:
		return plainServer{sasl.NewPlainServer(func(identity, user, password string) error {
			if identity != "" && identity != user {
				user = "" // another authorization identity: refused like a wrong user
			}
			return s.login(user, password)
		})}, nil
	case sasl.Login:
		return newLoginServer(s.login), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// errPlainMalformed answers a PLAIN message that is not [authzid] NUL
// authcid NUL passwd (RFC 4616 section 2): a syntax error (RFC 4954
// section 4), not a password to count. go-smtp answered it 454 4.7.0, a
// temporary failure, which a client tries again.
var errPlainMalformed = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2},
	Message: "The PLAIN response is not authzid NUL authcid NUL passwd in base64 (RFC 4616 section 2)"}

// plainServer is go-sasl's PLAIN server, refusing a malformed message
// itself with errPlainMalformed.
type plainServer struct{ sasl.Server }

func (p plainServer) Next(response []byte) ([]byte, bool, error) {
	if response != nil && bytes.Count(response, []byte{0}) != 2 {
		return nil, false, errPlainMalformed
	}
	return p.Server.Next(response)
}

// login checks a login through the guard: a failure is answered after its
// delay, and the MaxFailures-th ends the connection after the reply.
func (s *session) login(user, password string) error {
	cfg, g := &s.srv.cfg, s.srv.guard
	remote := loginguard.Peer(s.conn.RemoteAddr(), s.conn.LocalAddr())
	if s.closing {
		return errConnClosing
	}
	if err := g.Admit(remote); err != nil {
		s.failures++
		s.endIfLast()
		return errLoginsWaiting
	}
	userOK, ok := loginguard.NewCredentials(cfg.User, cfg.Password).Check(user, password)
	if !ok {
		s.failures++
		src, d := g.Fail(remote, s.failures, userOK, s.failures >= g.Limits().MaxFailures)
		// Closing the server ends the wait; the connection goes with it.
		g.Limits().Wait(s.srv.ctx, d)
		g.Done(src)
		s.endIfLast()
		return smtp.ErrAuthFailed
	}
	if err := s.conn.StartSession(); err != nil {
		// Answered, then the connection ends: a client tries again
		// later, its message kept (RFC 5321 section 3.8).
		s.closing = true
		s.conn.End()
		return errSessions
	}
	s.authed = true
	s.tls.loggedIn()
	return nil
}

// endIfLast, once the connection has failed MaxFailures logins, ends it
// after the reply in progress.
func (s *session) endIfLast() {
	if s.failures < s.srv.guard.Limits().MaxFailures {
		return
	}
	s.closing = true
	s.conn.End()
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if !s.authed {
		return errAuthFirst
	}
	if s.mail != nil {
		// RFC 5321 section 4.1.4. Taken as a new transaction, it left
		// out the recipients already answered 250 for.
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
			Message: "a transaction is in progress: RSET first, or end it with DATA"}
	}
	if from == "" || !s.srv.allowed(from) {
		return errNotIdentity("the sender <" + from + ">")
	}
	if err := checkAddress("sender", from, opts != nil && opts.UTF8); err != nil {
		return err
	}
	m := &Message{From: from}
	if opts != nil {
		m.UTF8 = opts.UTF8
		m.Body = string(opts.Body)
		m.Return = string(opts.Return)
		m.EnvelopeID = opts.EnvelopeID
		if !envelopeIDOK(opts.EnvelopeID) {
			return errEnvelopeID
		}
		if opts.Size > s.srv.cfg.MaxMessageBytes {
			return s.srv.errTooLarge()
		}
	}
	s.mail, s.rcpts = m, map[string]bool{}
	return nil
}

// errEnvelopeID refuses an ENVID of over 100 characters once its xtext is
// decoded (RFC 3461 section 4.4: a client must not send a longer one).
// go-smtp's server refuses one that is not printable ASCII, but takes any
// length, and the relay passed it on as it came: a smarthost that holds
// to the limit refuses the MAIL, and the message, answered 250 here,
// bounced.
var errEnvelopeID = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4},
	Message: "ENVID must be printable ASCII of at most 100 characters, as xtext (RFC 3461 section 4.4)"}

// envelopeIDOK reports whether id may be passed on as an ENVID: within
// 100 characters, and printable ASCII (go-smtp checks that too).
func envelopeIDOK(id string) bool {
	if len(id) > 100 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.authed {
		return errAuthFirst
	}
	if s.mail == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if _, domain, ok := strings.Cut(to, "@"); !ok || domain == "" {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
			Message: "a recipient needs a domain (name@example.org)"}
	}
	if err := checkAddress("recipient", to, s.mail.UTF8); err != nil {
		return err
	}
	// Said twice: one delivery. Folded as identities are: Go's
	// lower-casing maps other letters onto ASCII ones (the Kelvin sign to
	// k), and a second, other address answered 250 was left out.
	key := foldASCII(to)
	if s.rcpts[key] {
		return nil
	}
	if len(s.mail.Recipients) >= s.srv.cfg.MaxRecipients {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	}
	r := Recipient{Address: to}
	if opts != nil {
		for _, n := range opts.Notify {
			r.Notify = append(r.Notify, string(n))
		}
		if opts.OriginalRecipient != "" {
			r.ORCPT = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	s.rcpts[key] = true
	s.mail.Recipients = append(s.mail.Recipients, r)
	return nil
}

// checkAddress refuses an envelope address the relay cannot pass on as
// it was given. go-smtp's parser keeps every byte of a domain but blanks
// and '>', and of a quoted local part every byte, so "RCPT
// TO:<bob@example.net<CR>RSET>" reached the queue with its CR: go-smtp's
// client then refuses to write the line, and the message waited in the
// queue, relayed to none of its recipients, until it was given up on
// after 5 days, the client having had 250. A NUL, an ESC or another
// control character went to the smarthost as it came. A control character
// is a syntax error (501 5.1.3 for a recipient, 5.1.7 for the sender; RFC
// 5321 section 4.1.2 allows none in a path, and no quoted-pair makes one
// sendable on the relay's single line); an address beyond ASCII needs
// SMTPUTF8 in MAIL (553 5.6.7, RFC 6531 section 3.5), and valid UTF-8.
func checkAddress(what, addr string, utf8ok bool) error {
	bad := smtp.EnhancedCode{5, 1, 3}
	if what == "sender" {
		bad = smtp.EnhancedCode{5, 1, 7}
	}
	ascii := true
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c < 0x20 || c == 0x7f:
			return &smtp.SMTPError{Code: 501, EnhancedCode: bad,
				Message: fmt.Sprintf("the %s address holds a control character (0x%02X at byte %d), which no mail system can take", what, c, i)}
		case c >= 0x80:
			ascii = false
		}
	}
	switch {
	case ascii:
		return nil
	case !utf8ok:
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
			Message: "the " + what + " address is not ASCII: give SMTPUTF8 in MAIL (RFC 6531)"}
	case !utf8.ValidString(addr):
		return &smtp.SMTPError{Code: 501, EnhancedCode: bad, Message: "the " + what + " address is not valid UTF-8"}
	}
	return nil
}

func (s *session) Data(r io.Reader) error {
	if !s.authed {
		return errAuthFirst
	}
	if s.mail == nil || len(s.mail.Recipients) == 0 {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL and RCPT first"}
	}
	// The message's room is taken as it arrives, and given back once
	// answered.
	claim := s.srv.room.claim()
	defer claim.release()
	data, err := s.readMessage(r, claim)
	if err != nil {
		return err
	}
	if err := checkLineEnds(data); err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: upperFirst(err.Error())}
	}
	if err := checkFieldNames(data); err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: upperFirst(err.Error())}
	}
	h, err := ParseHeader(data)
	if errors.Is(err, ErrHeaderTooLarge) {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: upperFirst(err.Error())}
	}
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "The message header does not parse"}
	}
	addrs, err := originators(h)
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: upperFirst(err.Error())}
	}
	for _, a := range addrs {
		switch {
		case s.srv.allowed(a.address):
		case a.named:
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
				Message: "the " + a.field + " header field names <" + a.address + "> outside its address (in a display name, a comment, " +
					"a quoted string or an encoded word), which is not one of your identities (see --identity): readers show it as the author; " +
					"leave the address out of the name"}
		default:
			return errNotIdentity("the " + a.field + " address <" + a.address + ">")
		}
	}
	m := s.mail
	m.Data, m.MessageID, err = completeHeader(data, h, s.srv.cfg.Hostname, s.srv.cfg.Now())
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: upperFirst(err.Error())}
	}
	m.Added, m.DateAdded = len(m.Data)-len(data), !h.Has("Date")
	m.Content = nil
	if !h.Has("Message-Id") {
		m.Content = ContentDigest(data)
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.EnqueueTimeout)
	defer cancel()
	id, err := s.srv.cfg.Queue.Enqueue(ctx, m)
	if err != nil {
		s.srv.log.Error("storing a submitted message failed", "size", len(m.Data), "err", err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
			Message: "The message could not be stored; nothing was sent, try again"}
	}
	s.srv.log.Info("message queued", "queue_id", id, "size", len(m.Data), "recipients", len(m.Recipients))
	// go-smtp writes an *SMTPError returned by Data as the reply, whatever
	// its code: this is how the 250 names the queue id.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Queued as " + id}
}

// readMessage reads the message: after BDAT, r is the chunks' content;
// after DATA, the message is read from the connection (smtpdata.Reader).
// It takes room for it from claim as it arrives, and ends the connection
// when the client stops sending (dataWatch). A message over the limit is
// read to its end, holding no more room, so the connection stays in
// step, and refused with 552.
func (s *session) readMessage(r io.Reader, claim *roomClaim) ([]byte, error) {
	cfg := &s.srv.cfg
	if _, chunks := r.(*io.PipeReader); !chunks {
		dr := s.data.ReadData()
		defer s.data.DoneData(dr)
		r = dr
		// The watch bounds the message's time, not go-smtp's deadline
		// for the DATA line, which counted the waits for room.
		s.conn.SetReadDeadline(time.Time{})
	}
	watch := newDataWatch(cfg.DataIdleTimeout, cfg.ReadTimeout, func(line string) {
		s.srv.log.Info("message being received ended", "reason", line[10:])
		s.tls.bye(line)
	})
	r = watchedReader{r: r, w: watch}
	data, err := s.readInto(r, claim, watch)
	if watch.stop() && err == nil {
		// Read to its end as the watch ended the connection: the
		// client got the 421, not a 250.
		err = errors.New("the connection was ended")
	}
	if err == nil {
		claim.finish()
	}
	return data, err
}

// readInto reads r into a buffer as large as the room claim holds, taking
// more as it fills.
func (s *session) readInto(r io.Reader, claim *roomClaim, watch *dataWatch) ([]byte, error) {
	limit := s.srv.cfg.MaxMessageBytes
	var data []byte
	for {
		if int64(len(data)) == limit {
			// Anything more is over the limit: the message is
			// refused, its room given back at once, and the rest read
			// to its end into none.
			var one [1]byte
			if _, err := io.ReadFull(r, one[:]); err == io.EOF {
				return data, nil
			} else if err != nil {
				return nil, err
			}
			data = nil
			claim.giveBack()
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, err
			}
			return nil, s.srv.errTooLarge()
		}
		if len(data) == cap(data) {
			want := claim.r.next(int64(cap(data)))
			watch.pause()
			err := claim.grow(s.srv.ctx, want)
			watch.resume()
			if err != nil {
				return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "The server is closing; nothing was sent"}
			}
			grown := make([]byte, len(data), want)
			copy(grown, data)
			data = grown
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// errTooLarge refuses a message over the size limit, naming the limit
// (go-smtp's ErrDataTooLarge does not, and a client's user cannot tell by
// how much to shrink the message).
func (s *Server) errTooLarge() *smtp.SMTPError {
	return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: fmt.Sprintf("The message is over the size limit of %d bytes (SIZE in the EHLO reply); nothing was sent", s.cfg.MaxMessageBytes)}
}

// tooLargeLine is errTooLarge as a reply line.
func (s *Server) tooLargeLine() []byte {
	e := s.errTooLarge()
	return fmt.Appendf(nil, "%d %d.%d.%d %s\r\n", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

func (s *session) Reset() { s.mail, s.rcpts = nil, nil }

func (s *session) Logout() error { return nil }

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// errorLog turns go-smtp's connection errors into log records, within the
// login guard's log budget (a client can cause one per connection).
type errorLog struct{ g *loginguard.Guard }

func (a errorLog) Printf(format string, v ...any) {
	a.g.LibraryMessage("smtp: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (a errorLog) Println(v ...any) {
	a.g.LibraryMessage("smtp: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
