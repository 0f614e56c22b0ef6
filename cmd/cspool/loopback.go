package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A mail client or a browser given "localhost" connects to whichever of
// 127.0.0.1 and ::1 the system lists first (::1 on most systems whose
// /etc/hosts names both), and falls back to the other only when the first
// refuses. A listener on 127.0.0.1 alone leaves the same port on ::1 to
// any local user, whose program then receives the password of every
// client set to "localhost". So a listener the daemon opens for its user
// on a loopback address a client reaches as "localhost" (127.0.0.1, ::1,
// localhost) takes the port on both, and does not start when the other
// family's port is held (docs/SECURITY.md section 5).

// twinRetries bounds the tries for a port picked by the kernel (port 0)
// that is free on both loopback addresses.
const twinRetries = 16

// twinHost is the loopback address that a client given "localhost" may
// reach besides host, and whether host is one such a client reaches.
func twinHost(host string) (first, twin string, ok bool) {
	switch {
	case strings.EqualFold(host, "localhost"), host == "127.0.0.1":
		return "127.0.0.1", "::1", true
	case host == "::1":
		return "::1", "127.0.0.1", true
	}
	return host, "", false
}

// TwinHeldError is a loopback port held by another program on the other
// address family than the one the daemon listens on.
type TwinHeldError struct {
	Addr string // the address held, "[::1]:1143"
	Err  error
}

func (e *TwinHeldError) Error() string {
	return fmt.Sprintf("%s is in use by another program, which would receive what a client given \"localhost\" sends: %v", e.Addr, e.Err)
}

func (e *TwinHeldError) Unwrap() error { return e.Err }

// listenLocal listens for TCP on host:port, and on the same port of the
// other loopback address when host is one a client reaches as
// "localhost" (twinHost). A system without the other family (no IPv6)
// serves the one. The listener's Addr is the first address's.
func listenLocal(host string, port int) (net.Listener, error) {
	first, twin, ok := twinHost(host)
	if !ok {
		return net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	}
	for try := 0; ; try++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(first, strconv.Itoa(port)))
		if err != nil {
			return nil, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		twinAddr := net.JoinHostPort(twin, strconv.Itoa(p))
		ln2, err := net.Listen("tcp", twinAddr)
		switch {
		case err == nil:
			return newPairListener(ln, ln2), nil
		case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EPROTONOSUPPORT):
			// Nobody can listen there either.
			return ln, nil
		}
		ln.Close()
		if port == 0 && errors.Is(err, syscall.EADDRINUSE) && try < twinRetries {
			continue
		}
		return nil, &TwinHeldError{Addr: twinAddr, Err: err}
	}
}

// pairListener accepts from two listeners as one.
type pairListener struct {
	lns   [2]net.Listener
	conns chan accepted
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type accepted struct {
	c   net.Conn
	err error
}

func newPairListener(a, b net.Listener) *pairListener {
	p := &pairListener{lns: [2]net.Listener{a, b}, conns: make(chan accepted), done: make(chan struct{})}
	for _, ln := range p.lns {
		p.wg.Add(1)
		go p.accept(ln)
	}
	return p
}

// accept hands ln's connections to Accept until ln is closed or fails
// for good.
func (p *pairListener) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		select {
		case p.conns <- accepted{c, err}:
		case <-p.done:
			if c != nil {
				c.Close()
			}
			return
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !isTemporaryAccept(err) {
			return
		}
	}
}

// isTemporaryAccept reports an accept error that a later accept may not
// meet again (out of file descriptors, a connection aborted early).
func isTemporaryAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (p *pairListener) Accept() (net.Conn, error) {
	select {
	case a := <-p.conns:
		return a.c, a.err
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// Close closes both listeners; connections accepted and not yet taken by
// Accept are closed.
func (p *pairListener) Close() error {
	var err error
	p.once.Do(func() {
		close(p.done)
		err = errors.Join(p.lns[0].Close(), p.lns[1].Close())
		p.wg.Wait()
	})
	return err
}

func (p *pairListener) Addr() net.Addr { return p.lns[0].Addr() }
