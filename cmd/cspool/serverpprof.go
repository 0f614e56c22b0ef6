package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startPprof serves the Go runtime's profiles (CPU, heap, goroutines;
// net/http/pprof) at http://ADDR/debug/pprof/ on a listener of its own, for
// an operator who wants to see where a server's time or memory goes. Off by
// default. A heap profile holds whatever the process holds in memory (user
// names, sealed entries in flight), so keep ADDR on localhost.
func startPprof(addr string, errc chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, withHint(fmt.Errorf("listening for profiles on %s: %w", addr, err), "pick another --pprof-addr, or leave it empty")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving profiles on %s: %w", addr, err)
		}
	}()
	return srv, nil
}
