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
	if out != nil {
		g.leaveLocked(out.c)
		g.note(g.lim.Now(), g.library, g.proto+" connection waiting to log in pushed out by newer ones",
			"remote", out.remote, "source", out.key, "waiting", g.lobby.Len())
	}
	w := &waiting{c: c, key: key, remote: remote.String()}
	c.lobby = g.lobby.PushBack(w)
	g.perSource[key]++
	w.timer = time.AfterFunc(g.lim.LoginDeadline, func() {
		g.mu.Lock()
		gone := c.lobby == nil
		g.leaveLocked(c)
		g.mu.Unlock()
		if !gone {
			c.shut(LoginTimeout)
		}
	})
	g.mu.Unlock()
	if out != nil {
		go out.c.shut(PushedOut)
	}
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
