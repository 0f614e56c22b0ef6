package deliver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// LMTPOptions configures an LMTP listener. The zero value gives the
// documented defaults.
type LMTPOptions struct {
	// Hostname is announced in the greeting. Empty means "localhost".
	Hostname string
	// Domains, if not empty, are the only recipient domains accepted
	// (compared without regard to case); others get 550 5.1.2. Empty accepts
	// any domain: the mail transfer agent in front has already decided what
	// is local. An address without a domain is always accepted.
	Domains []string
	// RecipientDelimiter, if set, separates a user from an address
	// extension: with "+", "alice+lists@example.org" is delivered to alice
	// when no user "alice+lists" exists. Each of its characters is a
	// separator, the first in the local part counting, as Postfix's
	// recipient_delimiter ("+-": alice+x and alice-x reach alice). Empty
	// turns extensions off.
	RecipientDelimiter string
	// MaxMessageBytes is the largest message accepted (advertised as SIZE);
	// larger ones get 552 5.3.4. Zero means the Deliverer's limit.
	MaxMessageBytes int64
	// MaxRecipients is the most RCPT commands per message; more get
	// 452 4.5.3. Zero means 1000.
	MaxRecipients int
	// Parallel is the most users of one message sealed and appended at once.
	// Zero means 8.
	Parallel int
	// MaxInflightBytes bounds the memory held by messages being received
	// and delivered, across connections. A message's share is reserved as
	// its bytes arrive (the declared SIZE at its first byte, if there is
	// one), counted as the buffer holding it times costFactor (1 + 2 × the
	// users sealed at once). A message that does not fit is read to its end
	// and dropped, and every recipient gets 452 4.3.1; the connection stays
	// usable. A message alone in flight is never refused for the budget, so
	// one message may take up to MaxMessageBytes × (1 + 2 × Parallel)
	// whatever this is. Zero means 1 GiB.
	MaxInflightBytes int64
	// MemoryHeld, if set, is told every change of the bytes held against
	// MaxInflightBytes (positive as a message's share grows, negative as it
	// is given back), from the goroutines that make them.
	MemoryHeld func(delta int64)
	// MaxConns is the most connections open at once; one more is
	// answered "421 4.4.5" in place of the greeting and closed. Zero means
	// 100.
	MaxConns int
	// MaxConnsPerAddr is the most connections open at once from one
	// client address (an IPv4 address, or an IPv6 /64), answered the same
	// way. Zero means 50.
	MaxConnsPerAddr int
	// ReadTimeout bounds the wait for each command line, and for the whole
	// message after DATA. Zero means 10 minutes.
	ReadTimeout time.Duration
	// WriteTimeout bounds each reply. Zero means 1 minute.
	WriteTimeout time.Duration
	// DeliveryTimeout bounds the directory lookup of one RCPT and the
	// appends of one message. Zero means 2 minutes.
	DeliveryTimeout time.Duration
	// Logger receives one line per recipient outcome and connection errors.
	// Nil discards them.
	Logger *slog.Logger
	// Metrics receives recipient outcomes. Nil turns them off.
	Metrics Metrics
}

// fill gives the fields left zero their documented defaults (the
// message size d's).
func (o *LMTPOptions) fill(d *Deliverer) {
	if o.Hostname == "" {
		o.Hostname = "localhost"
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = d.maxBytes()
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = 1000
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	if o.MaxInflightBytes <= 0 {
		o.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxConnsPerAddr <= 0 {
		o.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 10 * time.Minute
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = time.Minute
	}
	if o.DeliveryTimeout <= 0 {
		o.DeliveryTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
}

// Defaults of LMTPOptions.
const (
	DefaultMaxInflightBytes = 1 << 30
	DefaultMaxConns         = 100
	DefaultMaxConnsPerAddr  = 50
)

// LMTP is an LMTP server (RFC 2033) delivering through a Deliverer.
type LMTP struct {
	d       *Deliverer
	opts    LMTPOptions
	domains map[string]bool
	srv     *smtp.Server
	log     *slog.Logger

	// ctx is the parent of every lookup and append; cancel ends them when
	// the listener is closed without grace. It is the listener's lifetime,
	// made by NewLMTP and ended by Close: the sessions go-smtp starts have
	// no context of their own to be handed.
	ctx    context.Context
	cancel context.CancelFunc

	inflight atomic.Int64 // bytes, see LMTPOptions.MaxInflightBytes
	bufs     bufPool      // messages' and entries' buffers
	closing  atomic.Bool

	// mu guards closing's change and listeners, those Serve was given,
	// which Shutdown and Close close themselves: go-smtp closes only the
	// listeners its Serve had taken, so a Serve whose goroutine started
	// after them would wait in Accept for ever.
	mu        sync.Mutex
	listeners []*lmtpListener
}

// NewLMTP makes an LMTP server delivering with d. Start it with Serve.
func NewLMTP(d *Deliverer, opts LMTPOptions) *LMTP {
	opts.fill(d)
	l := &LMTP{d: d, opts: opts, log: opts.Logger}
	if len(opts.Domains) > 0 {
		l.domains = make(map[string]bool, len(opts.Domains))
		for _, dom := range opts.Domains {
			l.domains[strings.ToLower(strings.TrimSuffix(dom, "."))] = true
		}
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	s := smtp.NewServer(smtp.BackendFunc(l.newSession))
	s.LMTP = true
	s.Network = "tcp"
	s.Domain = opts.Hostname
	// Advertised as SIZE, checked at MAIL FROM and against the sizes of BDAT
	// chunks; the session enforces it on the bytes it reads.
	s.MaxMessageBytes = opts.MaxMessageBytes
	s.MaxRecipients = opts.MaxRecipients
	// A message is stored as the bytes that came, so UTF-8 in its
	// addresses and header fields (RFC 6531, 6532) needs nothing more; a
	// mail server in front passes a message that needs SMTPUTF8 on only to
	// a next hop that offers it, and returns it to its sender otherwise
	// (Postfix: "SMTPUTF8 is required, but was not offered").
	s.EnableSMTPUTF8 = true
	// The library applies this to every line it reads; it never reads a
	// message sent with DATA (lmtpConn), so message lines are not limited.
	// BDAT chunks are read with the limit off.
	s.MaxLineLength = CommandLineLimit
	s.ReadTimeout = opts.ReadTimeout
	s.WriteTimeout = opts.WriteTimeout
	s.ErrorLog = slogAdapter{opts.Logger}
	l.srv = s
	return l
}

// Serve accepts LMTP connections on ln until Shutdown; it then returns nil.
// A listener on any address but a loopback one is warned about in the log:
// LMTP has no authentication.
func (l *LMTP) Serve(ln net.Listener) error {
	l.log.Info("lmtp listening", "addr", ln.Addr().String())
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
		// An operator's mistake as easy as --lmtp :2424 (docs/OPERATING.md).
		l.log.Warn("LMTP LISTENS BEYOND LOCALHOST: it has no authentication, so whoever reaches this address delivers mail "+
			"to every user, sealed and signed with the spool key, past every check of the mail server in front; "+
			"listen on 127.0.0.1, or on an address only that mail server can reach", "addr", ln.Addr().String())
	}
	lln := newLMTPListener(ln, l)
	l.mu.Lock()
	if l.closing.Load() {
		// Shutdown or Close came first.
		l.mu.Unlock()
		ln.Close()
		return nil
	}
	l.listeners = append(l.listeners, lln)
	l.mu.Unlock()
	err := l.srv.Serve(lln)
	if errors.Is(err, smtp.ErrServerClosed) || l.closing.Load() {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for the open ones to end.
// A connection waiting for its next command is answered 421 and closed at
// once; one reading or delivering a message gets that message's replies
// first, then the same 421 in place of its next command, so a client that
// keeps sending does not hold the server for the whole grace (RFC 5321
// section 3.8: the client keeps what was not acknowledged and retries).
// When ctx ends first, the remaining connections are closed, their appends
// are cancelled (their senders retry), and Shutdown returns ctx.Err().
func (l *LMTP) Shutdown(ctx context.Context) error {
	closeErr := l.closeListeners(true)
	err := l.srv.Shutdown(ctx)
	if err == nil || stoppedAlready(err) {
		err = closeErr
	}
	if ctx.Err() != nil {
		l.cancel()
		_ = l.srv.Close()
		return ctx.Err()
	}
	l.cancel()
	return err
}

// Close closes the listener and every connection at once, cancelling
// deliveries in progress.
func (l *LMTP) Close() error {
	closeErr := l.closeListeners(false)
	l.cancel()
	err := l.srv.Close()
	if err == nil || stoppedAlready(err) {
		return closeErr
	}
	return err
}

// stoppedAlready reports whether err of go-smtp's Shutdown or Close says
// only that the server or its listeners were closed before (by
// closeListeners, or by an earlier stop).
func stoppedAlready(err error) bool {
	return errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed)
}

// closeListeners marks the server closing and closes the listeners Serve
// was given (Serve then returns nil), interrupting their connections
// (lmtpConn) when interrupt is set. It returns the first error of closing
// a listener that was open.
func (l *LMTP) closeListeners(interrupt bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closing.Store(true)
	var first error
	for _, ln := range l.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) && first == nil {
			first = err
		}
		if interrupt {
			ln.interruptAll()
		}
	}
	return first
}

func (l *LMTP) newSession(c *smtp.Conn) (smtp.Session, error) {
	conn, ok := c.Conn().(*lmtpConn)
	if !ok {
		return nil, fmt.Errorf("lmtp: connection of type %T, want one accepted by LMTP.Serve", c.Conn())
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &session{l: l, conn: conn, id: hex.EncodeToString(b[:])}, nil
}

// slogAdapter turns go-smtp's connection error messages into log records.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) {
	a.l.Warn("lmtp: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (a slogAdapter) Println(v ...any) {
	a.l.Warn("lmtp: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
