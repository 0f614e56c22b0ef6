package loginguard

import (
	"net"
	"time"
)

// EndReason says why a connection that had not logged in was ended.
type EndReason int

const (
	// LoginTimeout: the connection did not log in within LoginDeadline.
	LoginTimeout EndReason = iota
	// PushedOut: newer connections waiting to log in went past MaxPending
	// or MaxPendingPerSource, and this one had waited longest.
	PushedOut
)

// waiting is what the guard keeps of a connection that has not logged in.
type waiting struct {
	c      *Conn
	key    string // its source
	remote string // its remote address, read when it came: a connection
	// being upgraded to TLS on its own goroutine may be in the middle of
	// replacing what answers RemoteAddr when it is pushed out
	timer *time.Timer
}

// lobbyFill gives the connection limits left zero their defaults.
func (l *Limits) lobbyFill() {
	if l.MaxPending <= 0 {
		l.MaxPending = 64
	}
	if l.MaxPendingPerSource <= 0 {
		l.MaxPendingPerSource = 8
	}
	if l.LoginDeadline <= 0 {
		l.LoginDeadline = time.Minute
	}
	if l.MaxSessions <= 0 {
		l.MaxSessions = 100
	}
}

// enter counts c among the connections waiting to log in, pushing out the
// one that waited longest when that goes past a limit, and starts c's
// login deadline.
func (g *Guard) enter(c *Conn) {
	remote := c.RemoteAddr()
	key := sourceKey(Peer(remote, c.LocalAddr()))
	g.mu.Lock()
	var out *waiting
	switch {
	case g.capped(key) && g.perSource[key] >= g.lim.MaxPendingPerSource:
		for e := g.lobby.Front(); e != nil; e = e.Next() {
			if w := e.Value.(*waiting); w.key == key {
				out = w
				break
			}
		}
	case g.lobby.Len() >= g.lim.MaxPending:
		// Another source's oldest before the daemon's own user's.
		out = g.lobby.Front().Value.(*waiting)
		for e := g.lobby.Front(); e != nil; e = e.Next() {
			if w := e.Value.(*waiting); w.key != g.own {
				out = w
				break
			}
		}
	}
	var bye bool // out gets the protocol's goodbye, not closed at once
	if out != nil {
		g.leaveLocked(out.c)
		g.note(g.lim.Now(), g.library, g.proto+" connection waiting to log in pushed out by newer ones",
			"remote", out.remote, "source", out.key, "waiting", g.lobby.Len())
		bye = g.startBye()
	}
	w := &waiting{c: c, key: key, remote: remote.String()}
	c.lobby = g.lobby.PushBack(w)
	g.perSource[key]++
	w.timer = time.AfterFunc(g.lim.LoginDeadline, func() {
		g.mu.Lock()
		gone := c.lobby == nil
		g.leaveLocked(c)
		bye := !gone && g.startBye()
		g.mu.Unlock()
		switch {
		case bye:
			g.shut(c, LoginTimeout)
		case !gone:
			c.Conn.Close()
		}
	})
	g.mu.Unlock()
	switch {
	case bye:
		go g.shut(out.c, PushedOut)
	case out != nil:
		// The goodbye's write waits for a client that does not read, or
		// whose TLS handshake stalls, up to the protocol's bound: a flood
		// of such connections, each pushing out the one before, held a
		// descriptor and goroutines for each of them meanwhile, past
		// MaxPending (TestPushedOutStalledTLSClosed in internal/imapd).
		go out.c.Conn.Close()
	}
}

// startBye counts a connection the guard ends with the protocol's
// goodbye, and reports false, counting nothing, when MaxPending of them
// are being ended already: that one is closed without a word. Called
// with g.mu held.
func (g *Guard) startBye() bool {
	if g.ending >= g.lim.MaxPending {
		return false
	}
	g.ending++
	return true
}

// shut ends c with the protocol's goodbye, counted by startBye.
func (g *Guard) shut(c *Conn, why EndReason) {
	defer func() {
		g.mu.Lock()
		g.ending--
		g.mu.Unlock()
	}()
	c.shut(why)
}

// capped reports whether the source key is held to MaxPendingPerSource:
// every source but the daemon's own user on loopback, and loopback whose
// users the kernel does not tell apart (where the user's mail client is
// one of them).
func (g *Guard) capped(key string) bool {
	return key != g.own && key != "loopback"
}

// leave takes c out of the connections waiting to log in, if it is there.
func (g *Guard) leave(c *Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.leaveLocked(c)
}

// leaveLocked is leave with g.mu held.
func (g *Guard) leaveLocked(c *Conn) {
	if c.lobby == nil {
		return
	}
	w := g.lobby.Remove(c.lobby).(*waiting)
	c.lobby = nil
	w.timer.Stop()
	if g.perSource[w.key]--; g.perSource[w.key] <= 0 {
		delete(g.perSource, w.key)
	}
}

// Pending reports how many connections are waiting to log in, in all and
// from remote's source, for tests and debugging.
func (g *Guard) Pending(remote net.Addr) (all, source int) {
	key := sourceKey(remote)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lobby.Len(), g.perSource[key]
}
