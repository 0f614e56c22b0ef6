package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/deliver"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/userdb"
)

// addrListener is a loopback listener that reports another address, as a
// listener on that address would.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// TestAPIWarnsBeyondLocalhost: the spool API served without TLS on a
// wildcard or another non-loopback address (cspool server --addr 0.0.0.0
// without --tls-cert) is warned about at every start, as an LMTP listener
// beyond localhost is: anyone on the path sees who reads how much and
// when, and can hold and replay signed requests. It started without a
// word. With TLS, or on loopback (behind a proxy that terminates TLS),
// nothing is said.
func TestAPIWarnsBeyondLocalhost(t *testing.T) {
	t.Parallel()
	noCert := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return nil, errors.New("no certificate in this test")
	}}
	for _, c := range []struct {
		name string
		addr net.Addr // nil: the listener's own
		tls  *tls.Config
		warn bool
	}{
		{"IPv4 wildcard", &net.TCPAddr{IP: net.IPv4zero, Port: 3999}, nil, true},
		{"IPv6 wildcard", &net.TCPAddr{IP: net.IPv6unspecified, Port: 3999}, nil, true},
		{"another address", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 3999}, nil, true},
		{"IPv4 wildcard with TLS", &net.TCPAddr{IP: net.IPv4zero, Port: 3999}, noCert, false},
		{"IPv6 loopback", &net.TCPAddr{IP: net.IPv6loopback, Port: 3999}, nil, false},
		{"127.0.0.1", nil, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			store, err := sqlitestore.Open(dir, sqlitestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			users, err := userdb.OpenTestMode(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var served net.Listener = ln
			if c.addr != nil {
				served = addrListener{Listener: ln, addr: c.addr}
			}
			var logs lockedBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			srv := newSpoolServer(api.Config{Store: store, Users: users, Logger: slog.New(slog.DiscardHandler)}, nil, deliver.LMTPOptions{}, log)
			errc := make(chan error, 4)
			srv.serve(served, nil, c.tls, errc)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			select {
			case err := <-errc:
				t.Errorf("serving: %v", err)
			default:
			}
			out := logs.String()
			warned := strings.Contains(out, "level=WARN") && strings.Contains(out, "API LISTENS BEYOND LOCALHOST WITHOUT TLS")
			if warned != c.warn {
				t.Errorf("listening on %v (TLS %v): warned %v, want %v; log:\n%s", served.Addr(), c.tls != nil, warned, c.warn, out)
			}
		})
	}
}

// TestServerPprofOnLoopback: cspool server --pprof-addr beyond loopback is
// refused at start, as the daemon's is. The profiles have no login, and
// /debug/pprof/cmdline serves the command line, which may hold a --dsn
// with its password. The server served them on any address it was given,
// ":6060" (every address) included.
func TestServerPprofOnLoopback(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "192.0.2.1:6060", "6060"} {
		var stderr bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
		// A server that takes the address stops at the next check.
		code := run(e, []string{"server", "--pprof-addr", addr, "--max-message-size", "0"})
		if msg := stderr.String(); code != 2 || !strings.Contains(msg, "--pprof-addr") || !strings.Contains(msg, "loopback") {
			t.Errorf("cspool server --pprof-addr %s: exit %d, stderr %q; want 2 and a word on loopback", addr, code, msg)
		}
	}
}
