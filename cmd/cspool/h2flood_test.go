package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
)

// TestRefusalsSlowedOverTLS: a stranger floods `cspool server --tls-cert`
// from one address over one connection. The server slows the refusals of
// an address to its rate, and beyond it holds each up to 2 s: a bound of
// a few dozen answers a second that counted one request at a time per
// connection. Over HTTP/2, which a server given --tls-cert negotiated,
// one connection carried up to 250 requests at once, each held and then
// answered: hundreds of refusals a second from one connection (and up to
// 16,000 requests waiting, each with its goroutine and buffers, from the
// 64 connections an address may open). The API now speaks HTTP/1.1 only,
// over TLS too; a user on the same address goes on.
func TestRefusalsSlowedOverTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	certPath, keyPath, pool := selfSigned(t, dir)
	env := append(os.Environ(), "USER="+loginName())
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	port := port43k(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--tls-cert", certPath, "--tls-key", keyPath, "--spool-key", "spool.sec")
	defer server.stop(t, syscall.SIGTERM, 40*time.Second)
	tlsConf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// alice registers her name (test mode): a stranger's key for it is
	// then refused before its signature is checked.
	alice, err := api.NewClient(url, "alice", mustKey(t), trusting)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err = alice.Health(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS server not healthy after 20 s: %v\n%s", err, server.stderr)
		}
	}
	if _, err := alice.Append(ctx, "alice", [][]byte{[]byte("mine")}); err != nil {
		t.Fatal(err)
	}
	// The stranger: one connection (as a client that offers HTTP/2 and
	// uses it makes), 100 requests at once, for 4 s.
	const workers, conns = 100, 1
	flood := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf.Clone(), ForceAttemptHTTP2: true,
		MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns}}
	defer flood.CloseIdleConnections()
	stranger := mustKey(t)
	// Signed at the earliest time the restarted server takes, as a
	// client learns it from a refusal (the restart rule).
	probe, err := http.NewRequestWithContext(ctx, "GET", url+"/v1/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := trusting.Do(probe)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	earliest, err := strconv.ParseInt(resp.Header.Get(api.HeaderEarliestTS), 10, 64)
	if err != nil {
		t.Fatalf("health answer without %s: %v", api.HeaderEarliestTS, err)
	}
	signAt := time.Unix(max(earliest, time.Now().Unix()), 0)
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		protos   = map[int]int{}
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(4 * time.Second)
	for range workers {
		wg.Go(func() {
			for n := 0; n < 10000 && time.Now().Before(deadline); n++ {
				req, err := http.NewRequestWithContext(ctx, "GET", url+"/v1/users/alice/head", nil)
				if err != nil {
					t.Error(err)
					return
				}
				if err := api.SignRequest(req, nil, stranger, signAt); err != nil {
					t.Error(err)
					return
				}
				resp, err := flood.Do(req)
				if err != nil {
					t.Errorf("flood request: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				protos[resp.ProtoMajor]++
				mu.Unlock()
			}
		})
	}
	// alice, on the same address, goes on meanwhile.
	var failures []error
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		if _, err := alice.Append(ctx, "alice", [][]byte{[]byte("during the flood")}); err != nil {
			failures = append(failures, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	took := time.Since(start).Seconds()
	for _, err := range failures {
		t.Errorf("alice during the flood: %v", err)
	}
	n := statuses[http.StatusUnauthorized]
	// As TestRefusalsSlowedPerAddress (internal/api): the burst and the
	// rate (20 a second, 2 s of it saved), each connection once per 2 s
	// held to the cap, and one in flight per connection.
	const rate, burst, hold = 20, 2, 2
	bound := rate*(burst+took) + conns*(took/hold+1) + conns
	t.Logf("%d refusals in %.1f s (bound %.0f), HTTP major versions %v", n, took, bound, protos)
	if protos[2] > 0 {
		t.Errorf("%d refusals came over HTTP/2, which carries many requests on one connection", protos[2])
	}
	if float64(n) > bound || n == 0 || len(statuses) != 1 {
		t.Errorf("flood over one TLS connection: %v in %.1f s; want only 401s, at most %.0f", statuses, took, bound)
	}
}

// port43k returns a port in 43000-43999 on 127.0.0.1 that was free a
// moment ago.
func port43k(t *testing.T) int {
	t.Helper()
	for i := range 1000 {
		p := 43000 + (os.Getpid()+i*7)%1000
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatal("no free port in 43000-43999")
	return 0
}
