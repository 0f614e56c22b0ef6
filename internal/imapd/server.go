package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"golang.org/x/sync/semaphore"

	"cspool/internal/command"
	"cspool/internal/loginguard"
	"cspool/internal/mailstore"
)

// Submitter appends commands to the user's log and returns once the device
// has applied the log up to them, with each entry's outcome (*syncer.Syncer).
type Submitter interface {
	Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error)
}

// Config configures a Server.
type Config struct {
	Store  *mailstore.Store // required
	Submit Submitter        // required
	// User is the IMAP login name (required).
	User string
	// Password is compared in constant time. An empty Password is refused
	// unless AllowEmptyPassword is set.
	Password           string
	AllowEmptyPassword bool
	// Logger gets connection and command failures; nil: slog.Default().
	Logger *slog.Logger
	// Alert, if non-nil and returning a non-empty text, is sent as an
	// untagged OK [ALERT] right after a successful login.
	Alert func() string
	// StoreProblem, if set, returns what a person must do about a failure
	// of the store that no retry heals (its database file damaged), ""
	// for any other. A command meeting such a failure is answered
	// NO [CORRUPTION] (RFC 5530) saying what to do, in place of
	// NO [SERVERBUG], and the failure is logged once with the hint, not
	// once per command.
	StoreProblem func(error) string
	// Login slows down password guessing; the zero value takes the
	// defaults documented on LoginLimits.
	Login LoginLimits
	// TLS, if set, is the server's TLS configuration (certificate, minimum
	// version): Serve offers STARTTLS with it and ServeTLS speaks TLS from
	// the first byte (implicit TLS, RFC 8314). With it, a login over a
	// connection without TLS is refused (LOGINDISABLED until STARTTLS,
	// NO [PRIVACYREQUIRED]) unless the client is on a loopback address.
	// Nil: no TLS, every login is taken in the clear.
	TLS *tls.Config
	// MaxMessageBytes is the largest message APPEND takes, advertised as
	// APPENDLIMIT (RFC 7889); zero means command.DefaultMaxMessageBytes,
	// the spool's own default for deliveries.
	MaxMessageBytes int64
	// AppendMemory bounds the bytes of APPENDed messages the server holds
	// at once, all connections together, from the read of each message
	// to its answer (its sealed copy and the store's come on top, about
	// twice as much more for a moment): an APPEND beyond it waits, before
	// reading its message, for the ones before it to end, so that clients
	// uploading large messages on many connections at once slow down
	// instead of taking the machine's memory. Zero means twice
	// MaxMessageBytes; it is raised to MaxMessageBytes if below.
	AppendMemory int64
	// AppendStall is how long an APPEND's message may come without
	// progress while it holds its share of AppendMemory: a window of it
	// that brings less than appendProgress bytes (or the rest of the
	// message) makes the server give the share back and drop what came,
	// and the APPEND gets NO [LIMIT] once its bytes have come (or the
	// connection ends). Without it, a client announcing messages of the
	// largest size and sending nothing held the budget, and every other
	// APPEND waited behind it, for go-imap's 5 minutes for a literal.
	// Zero means 30 seconds.
	AppendStall time.Duration
	// FetchMemory bounds the memory FETCHes of messages' bytes (BODY[],
	// RFC822, BODY[n], BINARY[n] and their partials) hold at once, all
	// connections together. A section of a message larger than 256 KiB
	// streamed from the store (stream.go) counts streamHold; one read
	// whole (where the streamed reading gives up, and for wide partials)
	// counts fetchCost times its message's size, at most FetchMemory: the
	// message read, the section extracted from it and the response. A
	// FETCH of a message larger than 256 KiB beyond it waits, before the
	// message is read, for the ones before it to be written. Zero means
	// fetchCost times MaxMessageBytes, so that one message of the largest
	// size read whole is served at a time.
	FetchMemory int64
	// Autologout is how long a logged-in session may send no command
	// before it gets an untagged BYE and is closed (RFC 9051 section
	// 5.4); a session in IDLE counts as sending none (RFC 2177). Zero
	// means 30 minutes, the RFC's least. go-imap sets a read deadline
	// of its own of 35 minutes before each command, so a longer one may
	// have no effect. The login phase is bounded by
	// LoginLimits.LoginDeadline.
	Autologout time.Duration
}

// defaultAutologout is Config.Autologout's default: RFC 9051 section 5.4's
// least autologout time.
const defaultAutologout = 30 * time.Minute

// defaultAppendStall is Config.AppendStall's default.
const defaultAppendStall = 30 * time.Second

// appendProgress is the bytes of an APPEND's message a window of
// Config.AppendStall must bring (or the rest of the message) for the
// APPEND to keep its share of Config.AppendMemory: a client sending a
// byte now and then holds it no longer than one sending none.
const appendProgress = 64 << 10

// fetchCost is how many times its size a FETCH of a message's bytes read
// whole holds at its peak: the message, the section the library extracts
// (read into a buffer that grows by doubling) and the response.
const fetchCost = 4

// Server is an IMAP server over a mail store. Create it with New.
type Server struct {
	cfg    Config
	log    *slog.Logger
	srv    *imapserver.Server
	guard  *loginguard.Guard
	ctx    context.Context // cancelled by Close: stops waiting submits and login delays
	cancel context.CancelFunc

	damagedLogged atomic.Bool // a StoreProblem was logged

	// kwLock is held by a change that creates a keyword from its check
	// against maxKeywords until it is submitted (keywordsLimit).
	kwLock chan struct{}

	appendMem *semaphore.Weighted // Config.AppendMemory
	fetchMem  *semaphore.Weighted // Config.FetchMemory

	mu     sync.Mutex
	boxes  map[command.ID]*mailbox // mailboxes loaded: INBOX and those selected since the start
	floors map[command.ID]imap.UID // \Recent: the highest UID claimed, per mailbox

	connMu sync.Mutex
	conns  map[*imapserver.Conn]struct{} // open connections, told BYE by Close

	appendingMu sync.Mutex
	appending   map[command.ID]map[chan struct{}]struct{} // APPENDs underway, per mailbox (appendStart)

	// SEARCH's workers (searchpool.go): how many a SEARCH has (0:
	// GOMAXPROCS; below 0: none, every body tested on the scan's
	// goroutine), a function each calls with its number as it takes a
	// message (tests), and how many messages they were handed.
	searchWorkers atomic.Int32
	searchHook    atomic.Pointer[func(worker int)]
	searchPooled  atomic.Int64
	// searchScanHook is called on a SEARCH's goroutine with each message
	// it reads (tests).
	searchScanHook atomic.Pointer[func(uid uint32)]
	// searchMem bounds the raw bytes handed to the workers of all
	// SEARCHes together and not tested yet (searchServerBytes), each
	// SEARCH's within its own searchPoolBytes.
	searchMem *semaphore.Weighted
}

// fill gives the fields left zero their documented defaults.
func (c *Config) fill() {
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = command.DefaultMaxMessageBytes
	}
	// APPENDLIMIT is a number32 (RFC 7889 section 3).
	c.MaxMessageBytes = min(c.MaxMessageBytes, 1<<32-1)
	if c.AppendMemory == 0 {
		c.AppendMemory = 2 * c.MaxMessageBytes
	}
	c.AppendMemory = max(c.AppendMemory, c.MaxMessageBytes)
	if c.AppendStall <= 0 {
		c.AppendStall = defaultAppendStall
	}
	if c.FetchMemory <= 0 {
		c.FetchMemory = fetchCost * c.MaxMessageBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Autologout <= 0 {
		c.Autologout = defaultAutologout
	}
}

// New returns a Server; call Serve to accept connections.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Submit == nil {
		return nil, errors.New("imapd: store and submitter are required")
	}
	if cfg.User == "" {
		return nil, errors.New("imapd: a user name is required")
	}
	if cfg.Password == "" && !cfg.AllowEmptyPassword {
		return nil, errors.New("imapd: an empty password is not allowed (set AllowEmptyPassword to allow it)")
	}
	cfg.fill()
	log := cfg.Logger
	s := &Server{cfg: cfg, log: log.With("component", "imap"), boxes: map[command.ID]*mailbox{},
		floors: map[command.ID]imap.UID{}, appendMem: semaphore.NewWeighted(cfg.AppendMemory), kwLock: make(chan struct{}, 1),
		fetchMem: semaphore.NewWeighted(cfg.FetchMemory), searchMem: semaphore.NewWeighted(searchServerBytes)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.loadFloors(ctx); err != nil {
		return nil, fmt.Errorf("imapd: reading the mailboxes: %w", err)
	}
	s.guard = loginguard.New(cfg.Login, s.log, "IMAP")
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.preload()
	s.srv = imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			s.connMu.Lock()
			if s.conns == nil {
				s.conns = map[*imapserver.Conn]struct{}{}
			}
			s.conns[c] = struct{}{}
			s.connMu.Unlock()
			return &session{srv: s, conn: c}, nil, nil
		},
		Caps: imap.CapSet{
			imap.CapIMAP4rev1:        {},
			imap.CapIMAP4rev2:        {},
			imap.CapSpecialUse:       {},
			imap.CapCreateSpecialUse: {},
			imap.CapBinary:           {},
			imap.CapLiteralPlus:      {},
			imap.CapUIDPlus:          {},
			imap.CapMove:             {},
			imap.CapNamespace:        {},
			imap.CapListStatus:       {},
			imap.CapChildren:         {},
			imap.CapESearch:          {},
			imap.CapSearchRes:        {},
		},
		Logger:       printfLogger{s.guard},
		InsecureAuth: true, // localhost only; see docs/IMAP.md
	})
	return s, nil
}

// Serve accepts connections on ln until Close, offering STARTTLS when
// Config.TLS is set.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(s.guarded(frameListener{Listener: ln, tls: s.cfg.TLS, requireTLS: s.cfg.TLS != nil}))
}

// ServeTLS accepts connections on ln until Close and speaks TLS on them
// from the first byte with Config.TLS, which must be set.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("imapd: ServeTLS needs Config.TLS")
	}
	return s.srv.Serve(s.guarded(frameListener{Listener: tls.NewListener(ln, s.cfg.TLS), requireTLS: true}))
}

// guarded puts the login guard's listener over ln: it bounds the
// connections that have not logged in (LoginLimits.MaxPending,
// MaxPendingPerSource, LoginDeadline) and ends those it lets wait no
// longer with an untagged BYE (docs/IMAP.md, "Before login").
func (s *Server) guarded(ln net.Listener) net.Listener {
	return &loginguard.Listener{Listener: ln, Guard: s.guard, Bye: func(c net.Conn, why loginguard.EndReason) {
		text := fmt.Sprintf("no login within %v; closing the connection", s.guard.Limits().LoginDeadline)
		if why == loginguard.PushedOut {
			text = "[UNAVAILABLE] too many connections are waiting to log in; closing the one that waited longest"
		}
		if fc, ok := c.(*frameConn); ok {
			fc.bye(text)
		} else {
			c.Close()
		}
	}}
}

// Close stops the listeners and closes every connection.
func (s *Server) Close() error {
	s.cancel()
	s.guard.Close()
	s.bye()
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("closing imap server: %w", err)
	}
	return nil
}

// Applied tells the sessions about a batch the syncer applied: install it as
// syncer.Config.OnApplied. It returns once every tracker is updated; it never
// writes to the network.
func (s *Server) Applied(res *mailstore.Result) {
	if res == nil {
		return
	}
	for id, changes := range res.ByMailbox() {
		s.mu.Lock()
		mb := s.boxes[id]
		s.mu.Unlock()
		if mb != nil && mb.apply(changes) {
			// Its sessions keep the deleted one; a mailbox of that id
			// selected from now on is a new one (a mailbox given a new
			// UIDVALIDITY on this device is deleted and created again,
			// docs/MAILSTORE.md).
			s.mu.Lock()
			if s.boxes[id] == mb {
				delete(s.boxes, id)
			}
			s.mu.Unlock()
		}
	}
}

// retire drops mb, loaded for a mailbox that the store now holds with
// another UIDVALIDITY (renewed: deleted and created again,
// docs/MAILSTORE.md "Changes made on this device"), or no more: its
// sessions are told it is deleted, and a mailbox of its id acquired from
// now on is loaded again. Such a change is committed before Applied
// hears it; a SELECT in between would otherwise show the old listing with
// the new UIDVALIDITY, and read the new mailbox's messages by its UIDs.
// Applied then finds mb deleted, or the new one loaded at or past the
// change's position.
func (s *Server) retire(mb *mailbox, renewed bool) {
	s.mu.Lock()
	if s.boxes[mb.id] == mb {
		delete(s.boxes, mb.id)
	}
	s.mu.Unlock()
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.loaded && !mb.deleted {
		mb.gone(renewed)
		mb.wake()
	}
}

// acquire returns the in-memory state of mailbox id, loaded, and counts a
// user of it; release undoes it.
func (s *Server) acquire(ctx context.Context, id command.ID) (*mailbox, error) {
	s.mu.Lock()
	mb := s.boxes[id]
	if mb == nil {
		mb = &mailbox{id: id, srv: s}
		s.boxes[id] = mb
	}
	mb.refs++
	s.mu.Unlock()
	if err := mb.load(ctx, s.cfg.Store); err != nil {
		s.release(mb)
		return nil, err
	}
	return mb, nil
}

// A mailbox no session uses stays in boxes, loaded and kept up to date by
// Applied, until it is deleted.
func (s *Server) release(mb *mailbox) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb.refs--
}

// preload loads INBOX, so the first SELECT after a start does not read
// its UIDs (it waits for the load if it comes meanwhile). A failure is
// left to that SELECT, which loads it again.
func (s *Server) preload() {
	mb, err := s.acquire(s.ctx, mailstore.InboxID())
	if err != nil {
		s.log.Debug("loading INBOX", "err", err)
		return
	}
	s.release(mb)
}

// printfLogger adapts slog to imapserver.Logger, within the login guard's
// log budget. The library quotes what it could not parse of a command
// (`bad number set value "..."`): a search word, a mailbox name, the
// user's own text, which the log never holds (docs/IMAP.md). Each quoted
// string is logged as its length only.
type printfLogger struct{ g *loginguard.Guard }

func (l printfLogger) Printf(format string, args ...any) {
	l.g.LibraryMessage(redactQuoted(fmt.Sprintf(format, args...)))
}

// quoted matches a Go-quoted string, as %q writes it.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// redactQuoted replaces each quoted string of msg with its length.
func redactQuoted(msg string) string {
	return quoted.ReplaceAllStringFunc(msg, func(q string) string {
		return fmt.Sprintf("(%d bytes left out)", len(q)-2)
	})
}

// byeTimeout bounds the write of a BYE to a client that does not read.
const byeTimeout = time.Second

// bye tells every open connection that the server is shutting down (RFC
// 9051 section 7.1.5) and closes it; they were closed without a word, and
// a client took it for a network failure. The writes go at once, each
// bounded by byeTimeout; bye waits for them twice that at most (a write
// of the session's own that sets a deadline of its own may hold one up:
// the library's Close then closes its connection under it).
func (s *Server) bye() {
	s.connMu.Lock()
	conns := make([]*imapserver.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.NetConn().SetWriteDeadline(time.Now().Add(byeTimeout))
			_ = c.Bye("the server is shutting down")
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * byeTimeout):
	}
}
