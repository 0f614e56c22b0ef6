package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"cspool/internal/api"
	"cspool/internal/deliver"
)

// spoolServer is the server role, assembled here once: the HTTP API over a
// store and its users, and, given a deliverer, the LMTP server whose
// deliveries are sealed and appended through it. cspool server and the
// quickstart compose it: newSpoolServer, serve, shutdown; each opens the
// store and the users and chooses the limits.
type spoolServer struct {
	api  *api.Server
	http *http.Server
	lmtp *deliver.LMTP // nil: no LMTP
	log  *slog.Logger
}

// newSpoolServer makes the API of cfg and, with d, the LMTP server of opts
// delivering through d. log gets the HTTP server's own complaints (bad
// requests from clients, TLS handshakes that fail).
func newSpoolServer(cfg api.Config, d *deliver.Deliverer, opts deliver.LMTPOptions, log *slog.Logger) *spoolServer {
	s := &spoolServer{api: api.NewServer(cfg), log: log}
	// HTTP/1.1 only, over TLS too: the API's bounds of an address count
	// its connections (64, each carrying one request at a time), and
	// HTTP/2 carries up to 250 requests at once on each: one connection
	// had hundreds of refusals a second answered, and an address up to
	// 16,000 requests waiting (TestRefusalsSlowedOverTLS).
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	// A header's bytes bounded (api.MaxHeaderBytes), not net/http's
	// megabyte: anyone's request is parsed whole before it is refused
	// (TestHugeHeaderRefused).
	s.http = &http.Server{Handler: s.api, ReadHeaderTimeout: 30 * time.Second, Protocols: &protocols,
		MaxHeaderBytes: api.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	if d != nil {
		s.lmtp = deliver.NewLMTP(d, opts)
	}
	return s
}

// serve serves the API on httpLn, over TLS with tlsConfig if not nil (by
// httpLn itself if it is the API's ListenerTLS, which parks long-polls over
// TLS too), and
// LMTP on lmtpLn, until shutdown. A listener that fails sends why on errc.
// The API on any address but a loopback one without TLS is warned about
// in the log (docs/TLS.md).
func (s *spoolServer) serve(httpLn, lmtpLn net.Listener, tlsConfig *tls.Config, errc chan<- error) {
	if a, ok := httpLn.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() && tlsConfig == nil {
		// As easy as --addr 0.0.0.0 without --tls-cert; a proxy that
		// terminates TLS in front reaches a loopback address.
		s.log.Warn("API LISTENS BEYOND LOCALHOST WITHOUT TLS: whoever is on the path sees which users read how much and when, "+
			"can replay a signed request to another server process within the clock-skew window, and can forge the server's answers; "+
			"serve it with --tls-cert and --tls-key, "+
			"or listen on 127.0.0.1 behind a reverse proxy that terminates TLS (docs/TLS.md)", "addr", httpLn.Addr().String())
	}
	go func() {
		var err error
		if tlsConfig != nil && !api.ServesTLS(httpLn) {
			s.http.TLSConfig = tlsConfig
			err = s.http.ServeTLS(httpLn, "", "")
		} else {
			err = s.http.Serve(httpLn)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving HTTP on %s: %w", httpLn.Addr(), err)
		}
	}()
	if s.lmtp != nil {
		go func() {
			if err := s.lmtp.Serve(lmtpLn); err != nil {
				errc <- fmt.Errorf("serving LMTP on %s: %w", lmtpLn.Addr(), err)
			}
		}()
	}
}

// shutdown ends the waiting reads, stops taking requests and deliveries,
// and waits for those in flight (the parked reads' answers too) until ctx
// ends.
func (s *spoolServer) shutdown(ctx context.Context) error {
	s.api.Shutdown()
	err := errors.Join(s.http.Shutdown(ctx), s.api.Drain(ctx))
	if s.lmtp != nil {
		err = errors.Join(err, s.lmtp.Shutdown(ctx))
	}
	return err
}
