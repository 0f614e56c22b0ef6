package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"cspool/internal/spool/sqlitestore"
	"cspool/internal/statuspage"
)

// TestBeyondLocalhost: which addresses of a metrics or status listener are
// warned about. An empty host listens on every address, as 0.0.0.0 and ::
// do.
func TestBeyondLocalhost(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		addr string
		want bool
	}{
		{":9399", true},
		{"0.0.0.0:9399", true},
		{"[::]:9399", true},
		{"192.0.2.1:9399", true},
		{"10.0.0.5:9399", true},
		{"[2001:db8::1]:9399", true},
		{"metrics.example.org:9399", true},
		{"9399", true},
		{"127.0.0.1:9399", false},
		{"127.0.0.53:9399", false},
		{"[::1]:9399", false},
		{"localhost:9399", false},
		{"LOCALHOST:1144", false},
	} {
		if got := beyondLocalhost(c.addr); got != c.want {
			t.Errorf("beyondLocalhost(%q) = %v, want %v", c.addr, got, c.want)
		}
	}
}

// TestMetricsWarnBeyondLocalhost: cspool server --metrics-addr on every
// address (":9399", "0.0.0.0:9399") or another address than a loopback
// one is warned about on standard error and in the log, as the API and
// LMTP listeners are: the metrics have no login and no TLS. They were
// served without a word. The listener is a real one on 127.0.0.1, which
// reports the address a listener beyond localhost would; the last case
// is that loopback listener as it is, which is scraped and not warned
// about.
func TestMetricsWarnBeyondLocalhost(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		addr net.Addr // nil: the listener's own
		warn bool
	}{
		{"IPv4 wildcard", &net.TCPAddr{IP: net.IPv4zero, Port: 9399}, true},
		{"IPv6 wildcard", &net.TCPAddr{IP: net.IPv6unspecified, Port: 9399}, true},
		{"another address", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 9399}, true},
		{"IPv6 loopback", &net.TCPAddr{IP: net.IPv6loopback, Port: 9399}, false},
		{"127.0.0.1", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			store, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var served net.Listener = ln
			if c.addr != nil {
				served = addrListener{Listener: ln, addr: c.addr}
			}
			var logs lockedBuffer
			var stderr bytes.Buffer
			s := &serverRun{e: &env{stderr: &stderr}, log: slog.New(slog.NewTextHandler(&logs, nil))}
			errc := make(chan error, 1)
			m := s.serveMetrics(served, store, store, 0, errc)
			defer m.close()
			resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), "cspool_logs ") {
				t.Errorf("GET /metrics: %s, want 200 and the metrics:\n%s", resp.Status, body)
			}
			const word = "METRICS ENDPOINT LISTENS BEYOND LOCALHOST"
			out, errOut := logs.String(), stderr.String()
			inLog := strings.Contains(out, "level=WARN") && strings.Contains(out, word) && strings.Contains(out, "--metrics-addr")
			onStderr := strings.Contains(errOut, "cspool: warning: "+word+" (--metrics-addr "+served.Addr().String()+")") &&
				strings.Contains(errOut, "cspool: hint: give --metrics-addr a loopback address")
			if inLog != c.warn || onStderr != c.warn {
				t.Errorf("metrics listening on %v: warned in the log %v, on stderr %v, want %v; log:\n%s\nstderr:\n%s",
					served.Addr(), inLog, onStderr, c.warn, out, errOut)
			}
		})
	}
}

// TestStatusPageWarnBeyondLocalhost: the daemon's status page on another
// address than a loopback one (--status-addr 0.0.0.0:1144, :1144) is
// warned about on standard error too, not only in the log: the IMAP
// password of whoever logs in there crosses the network in the clear.
func TestStatusPageWarnBeyondLocalhost(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		addr net.Addr // nil: the listener's own
		warn bool
	}{
		{"IPv4 wildcard", &net.TCPAddr{IP: net.IPv4zero, Port: 1144}, true},
		{"another address", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1144}, true},
		{"127.0.0.1", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var served net.Listener = ln
			if c.addr != nil {
				served = addrListener{Listener: ln, addr: c.addr}
			}
			var logs lockedBuffer
			var stderr bytes.Buffer
			// The page is not read here: its collector needs nothing.
			stop, err := serveStatusPage(served, statusPageConfig{source: &statuspage.Collector{}, user: "alice", password: "pw",
				log: slog.New(slog.NewTextHandler(&logs, nil)), stderr: &stderr})
			if err != nil {
				t.Fatal(err)
			}
			stop()
			const word = "STATUS PAGE LISTENS BEYOND LOCALHOST"
			out, errOut := logs.String(), stderr.String()
			inLog := strings.Contains(out, "level=WARN") && strings.Contains(out, word)
			onStderr := strings.Contains(errOut, "cspool: warning: "+word+" (--status-addr "+served.Addr().String()+")") &&
				strings.Contains(errOut, "cspool: hint: keep --status-addr on 127.0.0.1")
			if inLog != c.warn || onStderr != c.warn {
				t.Errorf("status page listening on %v: warned in the log %v, on stderr %v, want %v; log:\n%s\nstderr:\n%s",
					served.Addr(), inLog, onStderr, c.warn, out, errOut)
			}
		})
	}
}
