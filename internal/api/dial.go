package api

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// How a client's connection to the spool notices that its path died
// without a word: a laptop that moved to another network (its old address
// gone, so neither the spool's answer nor a reset reaches it), a NAT or
// firewall that forgot the connection. A device's read waits up to 5
// minutes for new entries (its long-poll) with nothing on the wire; with
// the operating system's defaults (and Go's, a keep-alive probe after 30 s
// idle, then every 30 s, 9 unanswered) such a connection was taken for
// alive for about 5 minutes, and the read's own bound (its wait plus
// readStall) is 7: new mail reached the device that long after it moved.
// With these, a connection whose probes go unanswered is closed within
// keepAliveIdle + keepAliveInterval × keepAliveCount (30 s), and the
// device reads again on a new one. A probe is an empty segment every
// keepAliveIdle on an idle connection, answered by the spool's kernel: a
// server with 10,000 idle devices answers about 670 a second, and its
// process never wakes for them. The probes also keep a NAT's mapping of an
// idle connection alive.
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 5 * time.Second
	keepAliveCount    = 3
	// unackedTimeout bounds how long bytes sent may go unacknowledged
	// before the connection is closed (TCP_USER_TIMEOUT, where the
	// system has it): keep-alive probes stop while a request is
	// unacknowledged, and retransmissions alone go on for about 15
	// minutes on Linux.
	unackedTimeout = keepAliveIdle + keepAliveInterval*keepAliveCount
)

// sharedTransport is the transport of the clients made without one
// (NewClient), one for all as http.DefaultTransport was (its pool of
// connections too): newTransport's.
var sharedTransport = sync.OnceValue(newTransport)

// CloseIdleConnections closes the idle connections of the clients made
// without a transport of their own (NewClient). A server stopped and
// started again on the same address (in a test) is otherwise met on a
// connection the old one closed, before the transport noticed: a POST
// then fails with EOF, as the transport retries no POST.
func CloseIdleConnections() { sharedTransport().CloseIdleConnections() }

// KeepAlive is the keep-alive setting of the connections of a client made
// without a transport (above), for a tool that dials its own and should
// behave as devices do (bench/devices).
func KeepAlive() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount}
}

// newTransport is http.DefaultTransport's settings, TLS and proxies
// included, with connections that notice a dead path (above).
func newTransport() *http.Transport {
	d := &net.Dialer{
		Timeout:         30 * time.Second,
		KeepAliveConfig: KeepAlive(),
		Control:         setUnackedTimeout,
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = d.DialContext
	return t
}
