package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"net/netip"
	"os"
	"runtime/pprof"
	"time"

	"cspool/internal/loginguard"
)

// checkPprofAddr refuses a --pprof-addr that is not a loopback host:port,
// for the spool server and the device daemon alike. The profiles have no
// login: whoever reaches them reads the process's command line
// (/debug/pprof/cmdline, which may hold a --password or a --dsn with its
// password), its goroutines' stacks, and starts CPU profiles and traces
// that cost the process while they run. Beyond this machine, an SSH tunnel
// reaches a loopback address.
func checkPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !isLoopback(host) {
		return usagef("--pprof-addr %q: want a loopback host:port, such as 127.0.0.1:6060: the profiles have no login, "+
			"and serve the command line to whoever reaches them (from another machine, use an SSH tunnel)", addr)
	}
	return nil
}

// startPprof serves the Go runtime's profiles (CPU, heap, goroutines;
// net/http/pprof) at http://ADDR/debug/pprof/ on a listener of its own, for
// an operator who wants to see where a process's time or memory goes. Off
// by default; ADDR is a loopback address (checkPprofAddr), only a request
// whose Host names this machine is served (knownHostOnly: a web page
// rebound to 127.0.0.1 in the user's browser is not), none a page of
// another site makes the browser send (notFromOtherSites), and only the
// process's own user (ownUserOnly).
func startPprof(addr string, errc chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, withHint(fmt.Errorf("listening for profiles on %s: %w", addr, err), "pick another --pprof-addr, or leave it empty")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", httppprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", httppprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", httppprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", httppprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", httppprof.Trace)
	srv := &http.Server{Handler: knownHostOnly(ln.Addr().String(), notFromOtherSites(ownUserOnly(mux))), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving profiles on %s: %w", addr, err)
		}
	}()
	return srv, nil
}

// ownUserOnly serves next to the user this process runs as, and answers
// 403 to every other: on loopback, every local user reaches the address,
// and a CPU profile or a trace costs the process while it runs, the
// goroutines' stacks show its internals, /debug/pprof/cmdline its command
// line. The kernel names the user owning the client's socket
// (loginguard.PeerUID); where it does not say, the request is refused too.
func ownUserOnly(next http.Handler) http.Handler {
	own := os.Geteuid()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		remote, err := netip.ParseAddrPort(r.RemoteAddr)
		if err == nil {
			if uid, ok := loginguard.PeerUID(net.TCPAddrFromAddrPort(remote), local); ok && int(uid) == own {
				next.ServeHTTP(w, r)
				return
			}
		}
		http.Error(w, fmt.Sprintf("the profiles are served to the user running this process only (uid %d)", own), http.StatusForbidden)
	})
}

// startCPUProfile profiles the process's CPU into file (runtime/pprof)
// until the returned function is called, which writes the profile out.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, withHint(fmt.Errorf("--cpuprofile: %w", err), "give a file in a directory you can write to")
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
