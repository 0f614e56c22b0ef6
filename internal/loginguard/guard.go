// Package loginguard slows down password guessing against the device's
// local listeners (IMAP, SMTP submission): a failed login is answered only
// after a delay that doubles per source and per connection, a connection is
// closed after a few failures, a source with too many failures waiting is
// refused unchecked, and the log keeps to a few lines a minute plus a
// summary (docs/IMAP.md, "Login"). Through its Listener it also bounds the
// connections that have not logged in: how many wait at once, in all and
// per source, and for how long (docs/IMAP.md, "Before login"); and those
// that have, for a server that counts them (Conn.StartSession;
// docs/IMAP.md, "Logged in: sessions bounded").
//
// Implementation notes: the per-source table (Tally) is bounded
// (MaxSources, then one shared entry); on loopback each local user is a
// source (the kernel names the owner of the client's socket), elsewhere an
// IPv4 address is one, an IPv6 /64 one. The daemon's own user on loopback
// is the one source not held to MaxPendingPerSource, and the last whose
// waiting connections a full room pushes out. The listeners of one daemon
// share one Tally, so a source's failures add up over IMAP, submission and
// the status page; the tally has a mutex of its own, and no code holds it
// and a guard's at once. The clock and the wait are injectable through
// Limits. A protocol maps ErrWaiting onto its own reply. The connections
// waiting to log in are one list in accept order under the guard's mutex,
// so the one pushed out is always the one that waited longest; a
// connection leaves it when it logs in or closes, and its deadline is a
// timer, not a read deadline, which the protocol libraries set for
// themselves before every command. At most MaxPending connections it ended
// are being given the protocol's goodbye at once, which waits for a client
// that does not read; it closes the others at once, so a flood holds at
// most twice MaxPending descriptors before login. The sessions are a
// count under the same mutex, taken at a login and given back by the
// connection's Close.
package loginguard

import (
	"container/list"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits slow down password guessing (docs/IMAP.md, "Login"). Zero
// fields take the defaults in brackets.
//
// A failed login (LOGIN, or AUTHENTICATE PLAIN) is answered only after a
// delay that starts at BaseDelay and doubles with every failure of the
// same source or connection, whichever has more, up to MaxDelay. After
// MaxFailures failures a connection gets BYE and is closed. A correct
// password is answered at once. While MaxWaiting failed logins of one
// source are waiting out their delay, further logins from that source are
// refused without the password being checked (NO [UNAVAILABLE]), so
// parallel connections do not multiply the guessing rate, and no source
// holds more than MaxWaiting connections in a delay.
type Limits struct {
	// MaxFailures is how many failed logins one connection may make. [3]
	MaxFailures int
	// BaseDelay and MaxDelay bound the delay before a failed login's
	// reply. [500 ms, 16 s]
	BaseDelay, MaxDelay time.Duration
	// Forget is how long after its last failure a source's count is kept.
	// [15 min]
	Forget time.Duration
	// MaxWaiting is how many failed logins of one source may wait out
	// their delay at once. [4]
	MaxWaiting int
	// MaxSources is how many sources are remembered. Sources met while the
	// table is full share one entry (and its delays). [1024]
	MaxSources int
	// LogLines is how many lines about failed logins are logged per
	// LogInterval; the failures past that are counted and logged as one
	// summary line at the end of the interval. [5, 1 min]
	LogLines    int
	LogInterval time.Duration
	// MaxPending is how many connections of a Listener may wait to log
	// in at once. A connection accepted beyond it pushes out the one that
	// has waited longest, which gets the protocol's goodbye and is closed:
	// a flood of connections that never log in cannot hold the daemon's
	// memory and file descriptors, nor keep a client that logs in at once
	// from doing so. [64]
	MaxPending int
	// MaxPendingPerSource is how many of them one source may hold; a
	// connection beyond it pushes out that source's oldest. On loopback
	// the sources are local users: the daemon's own user (its mail
	// clients) is bounded by MaxPending alone, every other user by this,
	// so another user cannot fill the room and push out the mail client's
	// connection; where the kernel does not name a connection's user, all
	// of loopback is one source bounded by MaxPending alone. When the
	// room is full, another source's oldest is pushed out before the own
	// user's. [8]
	MaxPendingPerSource int
	// LoginDeadline is how long a connection may take from its accept to
	// a successful login; then it gets the protocol's goodbye and is
	// closed, whatever it sent meanwhile. [1 min]
	LoginDeadline time.Duration
	// MaxSessions is how many connections of a Listener may be logged
	// in at once, counted from a login the server takes with
	// Conn.StartSession until the connection closes. A login beyond it
	// is refused (ErrSessions) once its password is found right; the
	// connection stays as it was, waiting to log in, and may log in once
	// a session has closed. A mail client holds a few connections at
	// once; a program that opens connections and never closes them
	// would otherwise hold the daemon's memory and descriptors without
	// bound. [100]
	MaxSessions int
	// Now is the clock. [time.Now]
	Now func() time.Time
	// Wait waits d, or until ctx is done (the server closing). [a timer]
	Wait func(ctx context.Context, d time.Duration) error
	// Tally holds the sources' failed logins. Guards given the same one
	// count together: a source's failures at any of them lengthen its
	// delay and fill its MaxWaiting at all of them, so that a daemon's
	// listeners taking one password (IMAP, submission, the status page)
	// do not each give a guesser a rate of its own. [a tally of the
	// guard's own]
	Tally *Tally
}

// fill gives the fields left zero their documented defaults.
func (l *Limits) fill() {
	if l.MaxFailures <= 0 {
		l.MaxFailures = 3
	}
	if l.MaxWaiting <= 0 {
		l.MaxWaiting = 4
	}
	if l.MaxSources <= 0 {
		l.MaxSources = 1024
	}
	if l.LogLines <= 0 {
		l.LogLines = 5
	}
	if l.BaseDelay <= 0 {
		l.BaseDelay = 500 * time.Millisecond
	}
	if l.MaxDelay <= 0 {
		l.MaxDelay = 16 * time.Second
	}
	if l.Forget <= 0 {
		l.Forget = 15 * time.Minute
	}
	if l.LogInterval <= 0 {
		l.LogInterval = time.Minute
	}
	l.lobbyFill()
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.Tally == nil {
		l.Tally = NewTally()
	}
	if l.Wait == nil {
		l.Wait = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// ErrWaiting refuses a login, unchecked, while its source has MaxWaiting
// failed logins waiting.
var ErrWaiting = errors.New("too many failed logins from this source are waiting")

// ErrSessions refuses a login while MaxSessions connections of the
// listener are logged in.
var ErrSessions = errors.New("too many connections are logged in")

// Source is what the guard knows of one source of logins.
type Source struct {
	key      string
	failures int       // since the count was last forgotten
	last     time.Time // the last failure
	waiting  int       // failed logins now waiting out their delay
}

// Tally is the table of sources and their failed logins (Limits.Tally).
// Its memory is bounded by MaxSources. Safe for concurrent use.
type Tally struct {
	mu       sync.Mutex
	sources  map[string]*Source
	overflow Source // the sources met while the table is full
}

// NewTally returns an empty tally, to give to the Limits of every
// listener whose failures should add up.
func NewTally() *Tally {
	return &Tally{sources: map[string]*Source{}, overflow: Source{key: "(other sources)"}}
}

// Guard holds the per-source state of Limits. Its memory is bounded by
// MaxSources; it starts no goroutine but one log timer.
type Guard struct {
	lim   Limits
	log   *slog.Logger
	proto string // "IMAP", "SMTP": named in the log
	t     *Tally // lim.Tally

	mu      sync.Mutex // the log state and the lobby; never held with t.mu
	library string     // the source key of the protocol library's messages

	window   time.Time      // start of the current log interval
	lines    int            // lines logged in it
	unlogged int            // events not logged one by one in it
	held     map[string]int // those events per source key
	timer    *time.Timer    // flushes the summary at the interval's end
	closed   bool

	lobby     list.List      // *waiting: the connections not logged in, oldest first
	perSource map[string]int // how many of them each source has
	own       string         // the source key of this process's user on loopback
	ending    int            // connections being ended with the protocol's goodbye (startBye)
	sessions  int            // connections logged in (Conn.StartSession)
}

// New returns a guard for the listener of proto ("IMAP", "SMTP"), logging
// to log.
func New(lim Limits, log *slog.Logger, proto string) *Guard {
	lim.fill()
	return &Guard{lim: lim, log: log, proto: proto, t: lim.Tally, perSource: map[string]int{}, held: map[string]int{},
		library: "(" + strings.ToLower(proto) + " library)", own: "loopback uid " + strconv.Itoa(os.Geteuid())}
}

// Limits returns the limits in force, defaults filled in.
func (g *Guard) Limits() Limits { return g.lim }

// sourceKey groups addresses into sources: the loopback addresses are one
// source for each local user, whose programs' sockets the kernel tells
// apart (peerUID), and one for all where it does not (a local user can
// bind any of 127/8); an IPv4 address is one, and an IPv6 /64 is one (a
// host usually holds a whole /64). A local user guessing the password
// thus slows down and refuses that user's own logins only, not those of
// the mail client of the user the daemon serves. a is best a Peer, which
// names the connection's two ends, so that the kernel's entry is that
// connection's (peerUID).
func sourceKey(a net.Addr) string {
	var ip net.IP
	port := 0
	var local *net.TCPAddr
	if p, ok := a.(peer); ok {
		a, local = p.remote, p.local
	}
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, port = a.IP, a.Port
	default:
		if a == nil {
			return "unknown"
		}
		host, p, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
		port, _ = strconv.Atoi(p)
	}
	switch {
	case ip == nil:
		return "unknown"
	case ip.IsLoopback():
		if uid, ok := peerUID(&net.TCPAddr{IP: ip, Port: port}, local); ok {
			return "loopback uid " + strconv.FormatUint(uint64(uid), 10)
		}
		return "loopback"
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Peer is the address to give the guard for a connection from remote to
// local (the listener's end, c.LocalAddr()): on loopback, the source is
// the user owning the client's socket, and the kernel's table names that
// socket by both ends. Its String is remote's. With remote alone, a local
// user could pass for root, whose uid the kernel lists for a port in
// TIME_WAIT that the user bound again (docs/IMAP.md, "Login").
func Peer(remote, local net.Addr) net.Addr {
	l, ok := local.(*net.TCPAddr)
	if !ok || remote == nil {
		return remote
	}
	return peer{remote: remote, local: l}
}

// peer is Peer's address.
type peer struct {
	remote net.Addr
	local  *net.TCPAddr
}

func (p peer) Network() string { return p.remote.Network() }
func (p peer) String() string  { return p.remote.String() }

// lookup returns key's entry, nil for a source with no failures, or the
// overflow entry when the table is full. create adds an entry when there is
// room. Called with t.mu held.
func (t *Tally) lookup(lim *Limits, key string, now time.Time, create bool) *Source {
	if s := t.sources[key]; s != nil {
		if s.waiting == 0 && now.Sub(s.last) > lim.Forget {
			s.failures = 0
		}
		return s
	}
	if len(t.sources) >= lim.MaxSources {
		t.sweep(lim, now)
	}
	if len(t.sources) >= lim.MaxSources {
		if t.overflow.waiting == 0 && now.Sub(t.overflow.last) > lim.Forget {
			t.overflow.failures = 0
		}
		return &t.overflow
	}
	if !create {
		return nil
	}
	s := &Source{key: key}
	t.sources[key] = s
	return s
}

// sweep drops the entries whose failures are forgotten and that nothing
// waits on. Called with t.mu held.
func (t *Tally) sweep(lim *Limits, now time.Time) {
	for k, s := range t.sources {
		if s.waiting == 0 && now.Sub(s.last) > lim.Forget {
			delete(t.sources, k)
		}
	}
}

// Admit is asked before a password is checked: it refuses (ErrWaiting)
// while the source has MaxWaiting failed logins waiting.
func (g *Guard) Admit(remote net.Addr) error {
	key := sourceKey(remote)
	now := g.lim.Now()
	g.t.mu.Lock()
	s := g.t.lookup(&g.lim, key, now, false)
	if s == nil || s.waiting < g.lim.MaxWaiting {
		g.t.mu.Unlock()
		return nil
	}
	key, waiting := s.key, s.waiting
	g.t.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.note(now, key, g.proto+" login refused unchecked: too many failed logins from this source are waiting",
		"remote", remote.String(), "source", key, "waiting", waiting)
	return ErrWaiting
}

// Fail records a failed login, the connFailures-th on its connection, and
// returns the delay to wait before replying. The caller must call Done
// after the wait.
func (g *Guard) Fail(remote net.Addr, connFailures int, userOK, closing bool) (*Source, time.Duration) {
	key := sourceKey(remote)
	now := g.lim.Now()
	g.t.mu.Lock()
	s := g.t.lookup(&g.lim, key, now, true)
	s.failures++
	s.last = now
	s.waiting++
	failures := s.failures
	g.t.mu.Unlock()
	d := g.delay(max(failures, connFailures))
	g.mu.Lock()
	defer g.mu.Unlock()
	g.note(now, s.key, "failed "+g.proto+" login", "remote", remote.String(), "source", s.key, "user_matches", userOK,
		"connection_failures", connFailures, "source_failures", failures, "delay", d, "closing", closing)
	return s, d
}

// Done ends the wait of a failed login of s.
func (g *Guard) Done(s *Source) {
	g.t.mu.Lock()
	defer g.t.mu.Unlock()
	s.waiting--
}

// delay is BaseDelay doubled for each failure after the first, at most
// MaxDelay.
func (g *Guard) delay(n int) time.Duration {
	d := g.lim.BaseDelay
	for i := 1; i < n && d < g.lim.MaxDelay; i++ {
		d *= 2
	}
	return min(d, g.lim.MaxDelay)
}

// note logs one event, or counts it for the interval's summary once
// LogLines lines were logged in the interval; key names its source.
// Called with g.mu held.
func (g *Guard) note(now time.Time, key string, msg string, args ...any) {
	if now.Sub(g.window) >= g.lim.LogInterval {
		g.flush()
		g.window, g.lines = now, 0
	}
	if g.lines < g.lim.LogLines {
		g.lines++
		g.log.Warn(msg, args...)
		return
	}
	g.unlogged++
	g.held[key]++
	if g.timer == nil && !g.closed {
		g.timer = time.AfterFunc(g.lim.LogInterval, g.flushDue)
	}
}

// flushDue is the timer's: it logs the summary once the interval is over.
func (g *Guard) flushDue() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.timer = nil
	if g.lim.Now().Sub(g.window) >= g.lim.LogInterval {
		g.flush()
		g.window, g.lines = g.lim.Now(), 0
	} else if g.unlogged > 0 && !g.closed {
		g.timer = time.AfterFunc(g.lim.LogInterval, g.flushDue)
	}
}

// flush logs the summary of the events not logged one by one: how many,
// from how many sources, and the busiest. Called with g.mu held.
func (g *Guard) flush() {
	if g.unlogged == 0 {
		return
	}
	sources, busiest, most := 0, g.library, g.held[g.library]
	for k, n := range g.held {
		if k == g.library {
			continue
		}
		sources++
		if n > most {
			busiest, most = k, n
		}
	}
	g.log.Warn(g.proto+" log lines held back (failed and refused logins, connection errors)", "count", g.unlogged,
		"since", g.window.Format(time.RFC3339), "sources", sources, "busiest_source", busiest, "busiest_count", most)
	g.unlogged = 0
	clear(g.held)
}

// LibraryMessage logs a message of the protocol library (a connection
// that sent garbage, a failed write...) within the same budget: a client
// can cause one per connection.
func (g *Guard) LibraryMessage(msg string) {
	if strings.HasPrefix(msg, "panic") {
		g.log.Error(msg) // a bug, not a client: always logged
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.note(g.lim.Now(), g.library, msg)
}

// Close logs what is pending and stops the timer.
func (g *Guard) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	for e := g.lobby.Front(); e != nil; e = e.Next() {
		e.Value.(*waiting).timer.Stop()
	}
	g.flush()
}

// State reports a source's failures and waiting logins, and the number of
// sources remembered, for tests and debugging.
func (g *Guard) State(remote net.Addr) (failures, waiting, sources int) {
	key := sourceKey(remote)
	g.t.mu.Lock()
	defer g.t.mu.Unlock()
	if s := g.t.lookup(&g.lim, key, g.lim.Now(), false); s != nil {
		failures, waiting = s.failures, s.waiting
	}
	return failures, waiting, len(g.t.sources)
}

// Listener hands out connections (*Conn) the server can end after a
// reply. Serve a *Listener: a server that keeps its listeners in a map
// (go-imap) cannot hash the Bye func. With Guard set, it also bounds the connections that have not
// logged in (Limits.MaxPending, MaxPendingPerSource, LoginDeadline): the
// server calls Conn.LoggedIn after a successful login.
type Listener struct {
	net.Listener
	// Guard, if set, counts the connections until they log in.
	Guard *Guard
	// Bye writes the protocol's goodbye on c (the connection under the
	// guard's, as Accept got it) for a connection the guard ends, and
	// closes it; nil: the connection is closed without a word. It is
	// called on a goroutine of its own, while the server may be writing
	// or reading on c.
	Bye func(c net.Conn, why EndReason)
}

// Accept implements net.Listener.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gc := &Conn{Conn: c}
	if l.Guard != nil {
		gc.guard, gc.bye = l.Guard, l.Bye
		l.Guard.enter(gc)
	}
	return gc, nil
}

// Conn lets the server end a connection after the reply in progress:
// once ended, the next write (that reply) goes out, later writes fail
// with net.ErrClosed and reads see end of file. The library's loop then
// stops at once, also for commands the client pipelined behind, and closes
// the connection.
type Conn struct {
	net.Conn
	ended  atomic.Bool
	writes atomic.Int32 // writes since ended

	guard   *Guard                    // nil: not counted before login
	bye     func(net.Conn, EndReason) // the Listener's Bye
	lobby   *list.Element             // in guard.lobby until it logs in or closes; under guard.mu
	session bool                      // counted in guard.sessions; under guard.mu
	closed  bool                      // Close was called; under guard.mu
}

// End lets one more write through, then ends the connection.
func (c *Conn) End() { c.ended.Store(true) }

// LoggedIn tells the guard the connection logged in: it no longer counts
// among those waiting, and its login deadline is off.
func (c *Conn) LoggedIn() {
	if c.guard != nil {
		c.guard.leave(c)
	}
}

// StartSession is LoggedIn for a server whose logged-in connections
// count against MaxSessions: c counts as a session until it closes. While
// MaxSessions are open it returns ErrSessions, and c stays waiting to log
// in, its deadline running.
func (c *Conn) StartSession() error {
	g := c.guard
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case c.closed:
		return net.ErrClosed
	case c.session:
		return nil
	case g.sessions >= g.lim.MaxSessions:
		remote := c.RemoteAddr()
		key := sourceKey(Peer(remote, c.LocalAddr()))
		g.note(g.lim.Now(), key, g.proto+" login refused: too many connections are logged in",
			"remote", remote.String(), "source", key, "sessions", g.sessions)
		return ErrSessions
	}
	g.leaveLocked(c)
	g.sessions++
	c.session = true
	return nil
}

// Sessions reports how many connections are logged in (Conn.StartSession),
// for tests and debugging.
func (g *Guard) Sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions
}

// shut ends a connection the guard let wait no longer.
func (c *Conn) shut(why EndReason) {
	if c.bye == nil {
		c.Conn.Close()
		return
	}
	c.bye(c.Conn, why)
}

// Close implements net.Conn; the connection no longer counts as waiting,
// nor as a session.
func (c *Conn) Close() error {
	if g := c.guard; g != nil {
		g.mu.Lock()
		g.leaveLocked(c)
		c.closed = true
		if c.session {
			c.session = false
			g.sessions--
		}
		g.mu.Unlock()
	}
	return c.Conn.Close()
}

func (c *Conn) Read(p []byte) (int, error) {
	if c.ended.Load() {
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

func (c *Conn) Write(p []byte) (int, error) {
	if c.ended.Load() && c.writes.Add(1) > 1 {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}
