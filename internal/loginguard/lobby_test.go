package loginguard

import (
	"log/slog"
	"net"
	"testing"
	"time"
)

// addrConn is a connection from remote that reads and writes nothing.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }
func (c addrConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1143} }
func (c addrConn) Close() error         { return nil }

// TestRoomFullOwnLast: the daemon's own user's source is not held to
// MaxPendingPerSource, and with the room for waiting connections full, a
// new connection pushes out the oldest of another source before the own
// user's, however long that one waited; the own user's oldest goes only
// when the room holds nothing else. The own user's source is played here by
// an IPv4 address; on loopback it is the daemon's uid.
func TestRoomFullOwnLast(t *testing.T) {
	g := New(Limits{MaxPending: 4, MaxPendingPerSource: 2, LoginDeadline: time.Hour}, slog.New(slog.DiscardHandler), "IMAP")
	defer g.Close()
	own := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 40000}
	g.own = sourceKey(own)
	enter := func(ip net.IP, port int) {
		g.enter(&Conn{Conn: addrConn{remote: &net.TCPAddr{IP: ip, Port: port}}, guard: g})
	}
	for i := range 4 {
		enter(own.IP, 40000+i) // beyond MaxPendingPerSource
	}
	if all, mine := g.Pending(own); all != 4 || mine != 4 {
		t.Fatalf("after 4 of the own source: %d waiting, %d its; want 4 and 4", all, mine)
	}
	other := net.IPv4(203, 0, 113, 7)
	enter(other, 50000) // the room is full of the own user's: its oldest goes
	if all, mine := g.Pending(own); all != 4 || mine != 3 {
		t.Fatalf("another source in a room full of the own user's: %d waiting, %d own; want 4 and 3", all, mine)
	}
	// The room is full: another source's oldest goes before the own
	// user's, which waited longer.
	enter(other, 50001)
	if all, mine := g.Pending(own); all != 4 || mine != 3 {
		t.Errorf("a second of another source: %d waiting, %d own; want 4 and 3", all, mine)
	}
	third := net.IPv4(203, 0, 113, 8)
	enter(third, 60000)
	if all, mine := g.Pending(own); all != 4 || mine != 3 {
		t.Errorf("a third source: %d waiting, %d own; want 4 and 3", all, mine)
	}
	if _, theirs := g.Pending(&net.TCPAddr{IP: other, Port: 1}); theirs != 0 {
		t.Errorf("the other source has %d waiting, want 0 (pushed out before the own user's)", theirs)
	}
}

// TestSessionsCounted: a connection counts as a session from
// StartSession until its first Close, however many follow (the library
// and the server's shutdown may both close it); a connection already
// closed is not counted; one refused at MaxSessions stays waiting to log
// in, and starts its session once another has closed.
func TestSessionsCounted(t *testing.T) {
	g := New(Limits{MaxPending: 8, MaxSessions: 2, LoginDeadline: time.Hour}, slog.New(slog.DiscardHandler), "IMAP")
	defer g.Close()
	conn := func(port int) *Conn {
		c := &Conn{Conn: addrConn{remote: &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: port}}, guard: g}
		g.enter(c)
		return c
	}
	a, b, c := conn(40001), conn(40002), conn(40003)
	for _, s := range []*Conn{a, b, a} {
		if err := s.StartSession(); err != nil {
			t.Fatalf("a session within MaxSessions: %v", err)
		}
	}
	if err := c.StartSession(); err != ErrSessions {
		t.Fatalf("a third session with MaxSessions 2: %v, want ErrSessions", err)
	}
	if all, _ := g.Pending(c.RemoteAddr()); all != 1 || g.Sessions() != 2 {
		t.Fatalf("%d waiting, %d sessions; want the refused one waiting and 2 sessions", all, g.Sessions())
	}
	a.Close()
	a.Close()
	if n := g.Sessions(); n != 1 {
		t.Fatalf("%d sessions after one closed twice, want 1", n)
	}
	if err := a.StartSession(); err == nil {
		t.Fatal("a closed connection started a session")
	}
	if err := c.StartSession(); err != nil {
		t.Fatalf("the refused one, once a session closed: %v", err)
	}
	if all, _ := g.Pending(c.RemoteAddr()); all != 0 || g.Sessions() != 2 {
		t.Fatalf("%d waiting, %d sessions; want none waiting and 2 sessions", all, g.Sessions())
	}
}
