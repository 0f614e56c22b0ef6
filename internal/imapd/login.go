package imapd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
)

// LoginLimits slow down password guessing (docs/IMAP.md, "Login"). Zero
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
type LoginLimits struct {
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
	// Now is the clock. [time.Now]
	Now func() time.Time
	// Wait waits d, or until ctx is done (the server closing). [a timer]
	Wait func(ctx context.Context, d time.Duration) error
}

func (l LoginLimits) withDefaults() LoginLimits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxFailures, 3)
	def(&l.MaxWaiting, 4)
	def(&l.MaxSources, 1024)
	def(&l.LogLines, 5)
	defDur(&l.BaseDelay, 500*time.Millisecond)
	defDur(&l.MaxDelay, 16*time.Second)
	defDur(&l.Forget, 15*time.Minute)
	defDur(&l.LogInterval, time.Minute)
	if l.Now == nil {
		l.Now = time.Now
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
	return l
}

// errLoginsWaiting refuses a login, unchecked, while its source has
// MaxWaiting failed logins waiting.
var errLoginsWaiting = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
	Text: "too many failed logins from your address; try again later"}

// errConnClosing refuses, unchecked, logins a client sent after the one
// that closed its connection (pipelined in the same read).
var errConnClosing = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed,
	Text: "too many failed logins; the connection is closing"}

// source is what the guard knows of one source of logins.
type source struct {
	key      string
	failures int       // since the count was last forgotten
	last     time.Time // the last failure
	waiting  int       // failed logins now waiting out their delay
	unlogged int       // failures and refusals in the summary to come
}

// loginGuard holds the per-source state of LoginLimits. Its memory is
// bounded by MaxSources; it starts no goroutine but one log timer.
type loginGuard struct {
	lim LoginLimits
	log *slog.Logger

	mu       sync.Mutex
	sources  map[string]*source
	overflow source // the sources met while the table is full
	library  source // the IMAP library's messages

	window   time.Time   // start of the current log interval
	lines    int         // lines logged in it
	unlogged int         // events not logged one by one in it
	timer    *time.Timer // flushes the summary at the interval's end
	closed   bool
}

func newLoginGuard(lim LoginLimits, log *slog.Logger) *loginGuard {
	return &loginGuard{lim: lim.withDefaults(), log: log, sources: map[string]*source{},
		overflow: source{key: "(other sources)"}, library: source{key: "(imap library)"}}
}

// sourceKey groups addresses into sources: every loopback address is one
// source (a local user can bind any of 127/8), an IPv4 address is one, and
// an IPv6 /64 is one (a host usually holds a whole /64).
func sourceKey(a net.Addr) string {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		if a == nil {
			return "unknown"
		}
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
	}
	switch {
	case ip == nil:
		return "unknown"
	case ip.IsLoopback():
		return "loopback"
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// lookup returns key's entry, nil for a source with no failures, or the
// overflow entry when the table is full. create adds an entry when there is
// room. Called with g.mu held.
func (g *loginGuard) lookup(key string, now time.Time, create bool) *source {
	if s := g.sources[key]; s != nil {
		if s.waiting == 0 && now.Sub(s.last) > g.lim.Forget {
			s.failures = 0
		}
		return s
	}
	if len(g.sources) >= g.lim.MaxSources {
		g.sweep(now)
	}
	if len(g.sources) >= g.lim.MaxSources {
		if g.overflow.waiting == 0 && now.Sub(g.overflow.last) > g.lim.Forget {
			g.overflow.failures = 0
		}
		return &g.overflow
	}
	if !create {
		return nil
	}
	s := &source{key: key}
	g.sources[key] = s
	return s
}

// sweep drops the entries whose failures are forgotten and that nothing
// waits on. Called with g.mu held.
func (g *loginGuard) sweep(now time.Time) {
	for k, s := range g.sources {
		if s.waiting == 0 && now.Sub(s.last) > g.lim.Forget {
			g.carry(s)
			delete(g.sources, k)
		}
	}
}

// carry moves a dropped entry's unlogged count into the overflow entry, so
// the summary still counts it.
func (g *loginGuard) carry(s *source) {
	g.overflow.unlogged += s.unlogged
}

// admit is asked before a password is checked: it refuses while the
// source has MaxWaiting failed logins waiting.
func (g *loginGuard) admit(remote net.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.lim.Now()
	s := g.lookup(sourceKey(remote), now, false)
	if s == nil || s.waiting < g.lim.MaxWaiting {
		return nil
	}
	g.note(now, s, "IMAP login refused unchecked: too many failed logins from this source are waiting",
		"remote", remote.String(), "source", s.key, "waiting", s.waiting)
	return errLoginsWaiting
}

// fail records a failed login, the connFailures-th on its connection, and
// returns the delay to wait before replying. The caller must call done
// after the wait.
func (g *loginGuard) fail(remote net.Addr, connFailures int, userOK, closing bool) (*source, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.lim.Now()
	s := g.lookup(sourceKey(remote), now, true)
	s.failures++
	s.last = now
	s.waiting++
	d := g.delay(max(s.failures, connFailures))
	g.note(now, s, "failed IMAP login", "remote", remote.String(), "source", s.key, "user_matches", userOK,
		"connection_failures", connFailures, "source_failures", s.failures, "delay", d, "closing", closing)
	return s, d
}

// done ends the wait of a failed login of s.
func (g *loginGuard) done(s *source) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s.waiting--
}

// delay is BaseDelay doubled for each failure after the first, at most
// MaxDelay.
func (g *loginGuard) delay(n int) time.Duration {
	d := g.lim.BaseDelay
	for i := 1; i < n && d < g.lim.MaxDelay; i++ {
		d *= 2
	}
	return min(d, g.lim.MaxDelay)
}

// note logs one event, or counts it for the interval's summary once
// LogLines lines were logged in the interval. Called with g.mu held.
func (g *loginGuard) note(now time.Time, s *source, msg string, args ...any) {
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
	s.unlogged++
	if g.timer == nil && !g.closed {
		g.timer = time.AfterFunc(g.lim.LogInterval, g.flushDue)
	}
}

// flushDue is the timer's: it logs the summary once the interval is over.
func (g *loginGuard) flushDue() {
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
func (g *loginGuard) flush() {
	if g.unlogged == 0 {
		return
	}
	sources, busiest := 0, &g.library
	for _, s := range g.sources {
		if s.unlogged > 0 {
			sources++
			if s.unlogged > busiest.unlogged {
				busiest = s
			}
		}
	}
	if g.overflow.unlogged > 0 {
		sources++
		if g.overflow.unlogged > busiest.unlogged {
			busiest = &g.overflow
		}
	}
	g.log.Warn("IMAP log lines held back (failed and refused logins, connection errors)", "count", g.unlogged,
		"since", g.window.Format(time.RFC3339), "sources", sources, "busiest_source", busiest.key, "busiest_count", busiest.unlogged)
	g.unlogged = 0
	g.overflow.unlogged, g.library.unlogged = 0, 0
	for _, s := range g.sources {
		s.unlogged = 0
	}
}

// libraryMessage logs a message of the IMAP library (a connection that
// sent garbage, a failed write...) within the same budget: a client can
// cause one per connection.
func (g *loginGuard) libraryMessage(msg string) {
	if strings.HasPrefix(msg, "panic") {
		g.log.Error(msg) // a bug, not a client: always logged
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.note(g.lim.Now(), &g.library, msg)
}

// close logs what is pending and stops the timer.
func (g *loginGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	g.flush()
}

// state reports a source's failures and waiting logins, for tests and
// debugging.
func (g *loginGuard) state(remote net.Addr) (failures, waiting, sources int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.lookup(sourceKey(remote), g.lim.Now(), false); s != nil {
		failures, waiting = s.failures, s.waiting
	}
	return failures, waiting, len(g.sources)
}

// guardListener hands out connections the server can end after a reply.
type guardListener struct{ net.Listener }

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: c}, nil
}

// guardConn lets the server end a connection after the reply in progress:
// once ended, the next write (that reply) goes out, later writes fail
// with net.ErrClosed and reads see end of file. The library's loop then
// stops at once, also for commands the client pipelined behind, and closes
// the connection.
type guardConn struct {
	net.Conn
	ended  atomic.Bool
	writes atomic.Int32 // writes since ended
}

// end lets one more write through, then ends the connection.
func (c *guardConn) end() { c.ended.Store(true) }

func (c *guardConn) Read(p []byte) (int, error) {
	if c.ended.Load() {
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

func (c *guardConn) Write(p []byte) (int, error) {
	if c.ended.Load() && c.writes.Add(1) > 1 {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}
