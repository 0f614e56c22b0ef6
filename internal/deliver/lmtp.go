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
	// when no user "alice+lists" exists. Empty turns extensions off.
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
	// MaxInflightBytes bounds the memory held by messages being delivered,
	// across connections, counted as message size times (1 + users sealed at
	// once). A message that does not fit gets 452 4.3.1 for every recipient,
	// unless nothing else is in flight. Zero means 1 GiB.
	MaxInflightBytes int64
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
		o.MaxInflightBytes = 1 << 30
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

// LMTP is an LMTP server (RFC 2033) delivering through a Deliverer.
type LMTP struct {
	d       *Deliverer
	opts    LMTPOptions
	domains map[string]bool
	srv     *smtp.Server
	log     *slog.Logger

	// ctx is the parent of every lookup and append; cancel ends them when
	// the listener is closed without grace.
	ctx    context.Context
	cancel context.CancelFunc

	inflight atomic.Int64 // bytes, see LMTPOptions.MaxInflightBytes
	closing  atomic.Bool
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
	// One byte over the limit, so a message of exactly the limit is read to
	// its end (the library fails a read once its budget is used up); the
	// session then enforces the limit itself.
	s.MaxMessageBytes = opts.MaxMessageBytes + 1
	s.MaxRecipients = opts.MaxRecipients
	// Lines are not limited beyond the message size: any bytes are a message,
	// including ones without line breaks.
	s.MaxLineLength = int(min(opts.MaxMessageBytes+1024, 1<<30))
	s.ReadTimeout = opts.ReadTimeout
	s.WriteTimeout = opts.WriteTimeout
	s.ErrorLog = slogAdapter{opts.Logger}
	l.srv = s
	return l
}

// Serve accepts LMTP connections on ln until Shutdown; it then returns nil.
func (l *LMTP) Serve(ln net.Listener) error {
	l.log.Info("lmtp listening", "addr", ln.Addr().String())
	err := l.srv.Serve(ln)
	if errors.Is(err, smtp.ErrServerClosed) || l.closing.Load() {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for the open ones to end.
// Deliveries in progress finish and get their replies; when ctx ends first,
// the remaining connections are closed, their appends are cancelled (their
// senders retry), and Shutdown returns ctx.Err().
func (l *LMTP) Shutdown(ctx context.Context) error {
	l.closing.Store(true)
	err := l.srv.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
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
	l.closing.Store(true)
	l.cancel()
	err := l.srv.Close()
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

func (l *LMTP) newSession(c *smtp.Conn) (smtp.Session, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &session{l: l, id: hex.EncodeToString(b[:])}, nil
}

// reserve takes n bytes of the in-flight budget; it always succeeds when
// nothing else is in flight, so one large message cannot starve.
func (l *LMTP) reserve(n int64) bool {
	for {
		cur := l.inflight.Load()
		if cur > 0 && cur+n > l.opts.MaxInflightBytes {
			return false
		}
		if l.inflight.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (l *LMTP) release(n int64) { l.inflight.Add(-n) }

// slogAdapter turns go-smtp's connection error messages into log records.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) {
	a.l.Warn("lmtp: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (a slogAdapter) Println(v ...any) {
	a.l.Warn("lmtp: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
