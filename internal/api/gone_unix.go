//go:build linux || darwin || freebsd || netbsd || openbsd

package api

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// clientGone reports whether the client of c, a connection the server is
// not reading (a parked read's), has closed it, or it has failed (reset,
// or its keep-alive probes went unanswered). It looks at what waits to be
// read without taking it (MSG_PEEK) or waiting for it (MSG_DONTWAIT): the
// end of the stream, or an error, is a client gone; nothing to read yet
// (EAGAIN), or bytes the client sent ahead, is a live one. A client that
// shut down its sending half and still waits for the answer counts as
// gone, as net/http's server takes it for a request waiting in a handler.
//
// It runs beside whatever the connection's own goroutine does (a peek
// takes nothing from a reader), through RawConn.Control, which waits on
// no other reader of the connection.
func clientGone(c net.Conn) bool {
	if lc, ok := c.(*limitedConn); ok {
		c = lc.Conn
	}
	if tc, ok := c.(*tls.Conn); ok {
		// Over ListenerTLS: the TCP connection under it. A client that
		// closes it with a close_notify alert sent bytes first, and counts
		// as live until its wait ends; a killed one sent none.
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			gone = n == 0 // the end of the stream
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR), errors.Is(err, syscall.ENOMEM), errors.Is(err, syscall.ENOBUFS):
			// Idle, or the system short of memory: not the client.
		default:
			gone = true // ECONNRESET, ETIMEDOUT, EHOSTUNREACH, ...
		}
	})
	return err == nil && gone
}
