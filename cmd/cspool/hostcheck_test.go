package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"cspool/internal/spool/sqlitestore"
)

// getAs sends GET url with host as its Host header, as a browser sends a
// page's own name to the address its DNS gave (127.0.0.1, once rebound).
func getAs(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Sec-Fetch-Mode", "cors")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body)
}

// TestRebindingRefused: a web page whose DNS name is rebound to 127.0.0.1
// makes the user's browser ask the loopback listeners with the page's name
// as the Host, and reads the answers as its own. The profiles (which the
// browser, running as the user, passes the own-user check of) and the
// server's metrics answer such a Host 421 and nothing else; the names of
// this machine are served. Before, both served any Host: the profiles'
// /debug/pprof/cmdline gave such a page the daemon's --password.
func TestRebindingRefused(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	errc := make(chan error, 1)
	ps, err := startPprof(addr, errc)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()

	store, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	s := &serverRun{e: &env{stderr: &stderr}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	m := s.serveMetrics(ln, store, store, 0, errc)
	defer m.close()

	_, pprofPort, _ := net.SplitHostPort(addr)
	_, metricsPort, _ := net.SplitHostPort(ln.Addr().String())
	for _, c := range []struct {
		what, url, port, want string
	}{
		{"profiles' command line", "http://" + addr + "/debug/pprof/cmdline", pprofPort, "cspool"},
		{"profiles' goroutines", "http://" + addr + "/debug/pprof/goroutine?debug=1", pprofPort, "goroutine profile:"},
		{"metrics", "http://" + ln.Addr().String() + "/metrics", metricsPort, "cspool_logs "},
	} {
		for _, host := range []string{"evil.example:" + c.port, "evil.example", "127.0.0.1.evil.example:" + c.port,
			"localhost.evil.example:" + c.port, "EVIL.example:" + c.port} {
			status, body := getAs(t, c.url, host)
			if status != http.StatusMisdirectedRequest || strings.Contains(body, c.want) {
				t.Errorf("%s with Host %q: status %d, body %.200q; want 421 and nothing of it", c.what, host, status, body)
			}
		}
		for _, host := range []string{"127.0.0.1:" + c.port, "localhost:" + c.port, "LocalHost:" + c.port, "[::1]:" + c.port, "localhost"} {
			status, body := getAs(t, c.url, host)
			if status != http.StatusOK || !strings.Contains(body, c.want) {
				t.Errorf("%s with Host %q: status %d, body %.200q; want 200 and %q", c.what, host, status, body, c.want)
			}
		}
	}
}

// TestMetricsBeyondLoopbackAnyHost: a --metrics-addr beyond loopback
// (warned about) is reached by other names than this machine's, so it is
// served whatever the Host; only loopback listeners check it.
func TestMetricsBeyondLoopbackAnyHost(t *testing.T) {
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
	var stderr bytes.Buffer
	s := &serverRun{e: &env{stderr: &stderr}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	m := s.serveMetrics(addrListener{Listener: ln, addr: &net.TCPAddr{IP: net.IPv4zero, Port: 9399}}, store, store, 0, make(chan error, 1))
	defer m.close()
	status, body := getAs(t, "http://"+ln.Addr().String()+"/metrics", "metrics.example.org:9399")
	if status != http.StatusOK || !strings.Contains(body, "cspool_logs ") {
		t.Errorf("metrics on 0.0.0.0 with Host metrics.example.org: status %d, body %.200q; want 200 and the metrics", status, body)
	}
}

// TestProfilesRefuseOtherSites: a web page cannot read the profiles
// (TestRebindingRefused), but its <img src> or form sent the user's
// browser to them with 127.0.0.1 as the Host, and the own-user check lets
// that browser in: a CPU profile or a trace started so costs the process
// while it runs. A request a browser sends for another site's page gets
// 403 before anything starts; go tool pprof, curl (neither header) and an
// address typed into the browser or a link of the index page are served.
func TestProfilesRefuseOtherSites(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ps, err := startPprof(addr, make(chan error, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	_, port, _ := net.SplitHostPort(addr)
	get := func(path string, hdr map[string][]string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, vs := range hdr {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}
	for _, hdr := range []map[string][]string{
		{"Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Mode": {"no-cors"}, "Sec-Fetch-Dest": {"image"}},
		{"Sec-Fetch-Site": {"same-site"}, "Sec-Fetch-Mode": {"navigate"}, "Sec-Fetch-Dest": {"document"}},
		{"Sec-Fetch-Site": {"none", "cross-site"}},
		{"Origin": {"http://evil.example"}},
		{"Origin": {"null"}},
		{"Origin": {"http://127.0.0.1:1"}},
		{"Origin": {"http://127.0.0.1:" + port, "http://evil.example"}},
	} {
		for _, path := range []string{"/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1", "/debug/pprof/cmdline"} {
			if status, body := get(path, hdr); status != http.StatusForbidden {
				t.Errorf("GET %s with %v: status %d, body %.100q; want 403", path, hdr, status, body)
			}
		}
	}
	for _, hdr := range []map[string][]string{
		nil,
		{"Sec-Fetch-Site": {"none"}, "Sec-Fetch-Mode": {"navigate"}, "Sec-Fetch-Dest": {"document"}},
		{"Sec-Fetch-Site": {"same-origin"}, "Sec-Fetch-Mode": {"navigate"}, "Sec-Fetch-Dest": {"document"}},
		{"Origin": {"http://127.0.0.1:" + port}},
	} {
		if status, body := get("/debug/pprof/cmdline", hdr); status != http.StatusOK || !strings.Contains(body, "cspool") {
			t.Errorf("GET /debug/pprof/cmdline with %v: status %d, body %.100q; want 200 and the command line", hdr, status, body)
		}
	}
}
