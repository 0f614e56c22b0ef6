package main

import (
	"net"
	"net/http"
	"strings"

	"cspool/internal/statuspage"
)

// loopbackHosts are the names a request's Host header may carry on a
// listener at addr (host:port): localhost, 127.0.0.1, ::1 and addr's own
// host, when addr is a loopback address; nil (any Host) beyond loopback,
// where the listener is warned about and a browser's rebinding is not
// what guards it.
func loopbackHosts(addr string) []string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !isLoopback(host) {
		return nil
	}
	return []string{"localhost", "127.0.0.1", "::1", host}
}

// hostIn reports whether hostport (a request's Host: a name or an
// address, with or without a port, IPv6 in brackets) names one of hosts,
// compared without case.
func hostIn(hostport string, hosts []string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	for _, a := range hosts {
		if strings.EqualFold(host, strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")) {
			return true
		}
	}
	return false
}

// knownHostOnly serves next the requests whose Host names this machine
// (loopbackHosts of the listener's address addr) and answers the others
// 421, as the status page does. A web page whose DNS name its owner
// rebinds to 127.0.0.1 makes the browser of a user on this machine send
// its requests to a loopback listener with that name as the Host, the
// page's own origin, so the page reads the answers: the profiles (the
// command line with a --password, the goroutines' stacks) and the
// metrics. The browser runs as the user, so the profiles' own-user check
// lets it in. Beyond loopback, next is served every Host.
func knownHostOnly(addr string, next http.Handler) http.Handler {
	hosts := loopbackHosts(addr)
	if hosts == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostIn(r.Host, hosts) {
			http.Error(w, "misdirected request: unknown host name", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// notFromOtherSites answers 403 to a request a browser sends for a page of
// another site or origin (Sec-Fetch-Site cross-site or same-site, or an
// Origin that is not http:// and the request's Host) and serves next the
// others: go tool pprof and curl send neither header, and a browser sends
// Sec-Fetch-Site none for an address typed in, same-origin for a link of
// the profiles' own index. A web page cannot read the profiles through the
// user's browser (knownHostOnly), but its
// <img src="http://127.0.0.1:6060/debug/pprof/profile?seconds=60"> would
// still start CPU profiles and traces, which cost the process while they
// run; the browser runs as the user, so the own-user check lets it in.
func notFromOtherSites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !statuspage.FromThisOrigin(r) {
			http.Error(w, "forbidden: a request from another site's page", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
