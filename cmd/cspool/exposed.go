package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"cspool/internal/termtext"
)

// beyondLocalhost reports whether a listener on addr, a host:port as a
// flag names it or as net.Listener.Addr gives it, is reachable from other
// machines: any host but a loopback address or "localhost", an empty
// host (":9399") and an unspecified one (0.0.0.0, ::) included. An
// address that does not parse is taken as reachable.
func beyondLocalhost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	return !isLoopback(host)
}

// exposure is a listener of a side channel (metrics, the status page)
// that is meant for this machine: what it is, the flag that places it,
// what anyone who reaches it gets, and where to put it instead.
type exposure struct {
	what    string // "METRICS ENDPOINT", "STATUS PAGE"
	flag    string
	risk    string
	instead string
}

var (
	metricsExposure = exposure{
		what: "METRICS ENDPOINT", flag: "--metrics-addr",
		risk: "they have no login and no TLS: whoever reaches this address reads the server's figures " +
			"(deliveries, refusals, logs and their sizes, the process's memory and files)",
		instead: "give --metrics-addr a loopback address (127.0.0.1:9399) and scrape it from this machine, " +
			"through an SSH tunnel or a reverse proxy, or a private address only the scraper reaches (docs/METRICS.md)",
	}
	statusExposure = exposure{
		what: "STATUS PAGE", flag: "--status-addr",
		risk: "it has no TLS: the IMAP password of whoever logs in there, and the folders' names and counts, " +
			"cross the network in the clear",
		instead: "keep --status-addr on 127.0.0.1 (127.0.0.1:1144 by default) and reach it from another machine " +
			"through an SSH tunnel, or use cspool status on this one (docs/STATUS.md)",
	}
)

// warnExposed says, on standard error (when w is not nil) and in the log,
// that the listener x listens on addr, beyond localhost, as the API's and
// LMTP's listeners are warned about. It does not refuse: a private
// address only the scraper reaches is a choice, which the process cannot
// tell from a public one.
func warnExposed(w io.Writer, log *slog.Logger, x exposure, addr string) {
	if w != nil {
		fmt.Fprintf(w, "cspool: warning: %s LISTENS BEYOND LOCALHOST (%s %s): %s\n", x.what, x.flag, addr, x.risk)
		fmt.Fprintf(w, "cspool: hint: %s\n", x.instead)
	}
	log.Warn(x.what+" LISTENS BEYOND LOCALHOST: "+x.risk+"; "+x.instead, "addr", addr, "flag", x.flag)
}

// plainBeyondLocalhost reports whether spoolURL reaches a spool server
// on another machine without TLS: an http:// URL whose host is not a
// loopback address or "localhost". A URL that does not parse is left to
// api.NewClient, which refuses it.
func plainBeyondLocalhost(spoolURL string) bool {
	u, err := url.Parse(spoolURL)
	if err != nil || !strings.EqualFold(u.Scheme, "http") || u.Host == "" {
		return false
	}
	return !isLoopback(u.Hostname())
}

// warnPlainSpool says, on standard error (when w is not nil) and in the
// log (when log is not nil), that this program reaches the spool server
// at spoolURL without TLS beyond localhost. The server warns of an API it
// serves so, but not of a proxy in front of it that also takes plain HTTP
// (one that terminates TLS on its port 443 and passes port 80 on): only
// the client knows how it reaches the spool. It does not refuse: a spool
// on a private network only this machine and the server reach is a
// choice, which the program cannot tell from the internet.
func warnPlainSpool(w io.Writer, log *slog.Logger, spoolURL, forged string) {
	spoolURL = termtext.WithoutUserinfo(spoolURL) // said before the URL is refused for them
	risk := "whoever is on the path sees whose log is read and written, how much and when, " +
		"can hold and replay the signed requests, and can forge the spool's answers (" + forged + ")"
	instead := "reach the spool server over https:// (docs/TLS.md): serve it with --tls-cert and --tls-key, " +
		"or behind a reverse proxy that terminates TLS"
	if w != nil {
		fmt.Fprintf(w, "cspool: warning: THE SPOOL SERVER %s IS REACHED WITHOUT TLS BEYOND LOCALHOST: %s\n", spoolURL, risk)
		fmt.Fprintf(w, "cspool: hint: %s\n", instead)
	}
	if log != nil {
		log.Warn("THE SPOOL SERVER IS REACHED WITHOUT TLS BEYOND LOCALHOST: "+risk+"; "+instead, "spool_server", spoolURL)
	}
}
