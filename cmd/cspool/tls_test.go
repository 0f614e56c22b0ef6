package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/spool"
)

// selfSigned writes a self-signed certificate for 127.0.0.1, localhost and
// names (its own CA) and its key, PEM, into dir.
func selfSigned(t *testing.T, dir string, names ...string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cspool test spool"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              append([]string{"localhost"}, names...),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "spool.crt"), filepath.Join(dir, "spool.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestServerTLS serves the API over HTTPS with a self-signed certificate,
// talks to it with the api client trusting that certificate, and runs the
// whole path (cspool deliver --spool-server https://..., cspool imap-server
// --spool-server https://..., IMAP) with the certificate trusted through
// SSL_CERT_FILE, as docs/TLS.md describes.
func TestServerTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	dir := t.TempDir()
	certPath, keyPath, pool := selfSigned(t, dir)
	user := loginName()
	env := append(os.Environ(), "USER="+user)
	runCmd(t, dir, env, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")

	port := freePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--tls-cert", certPath, "--tls-key", keyPath, "--spool-key", "spool.sec")

	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	health, err := api.NewClient(url, "", mustKey(t), trusting)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err = health.Health(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS server not healthy after 20 s: %v\n%s", err, server.stderr)
		}
	}

	// The api client with a custom http.Client trusting the certificate.
	alice := mustKey(t)
	ac, err := api.NewClient(url, "alice", alice, trusting)
	if err != nil {
		t.Fatal(err)
	}
	if first, err := ac.Append(ctx, "alice", [][]byte{[]byte("over TLS")}); err != nil || first != 1 {
		t.Fatalf("append over HTTPS: first %d, %v", first, err)
	}
	es, head, err := ac.Read(ctx, 0, 0, 0, 0)
	if err != nil || head != 1 || len(es) != 1 || string(es[0].Data) != "over TLS" {
		t.Fatalf("read over HTTPS: %d entries, head %d, %v", len(es), head, err)
	}
	// Without trusting it, the client refuses the certificate.
	untrusting, err := api.NewClient(url, "alice", alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	var uae x509.UnknownAuthorityError
	if _, err := untrusting.Head(ctx); !errors.As(err, &uae) {
		t.Errorf("client with the system roots: %v, want x509.UnknownAuthorityError", err)
	}
	// Plain HTTP to the TLS port gets no API answer.
	plain, _ := api.NewClient(strings.Replace(url, "https:", "http:", 1), "alice", alice, nil)
	if _, err := plain.Head(ctx); err == nil {
		t.Error("plain HTTP to the HTTPS port succeeded")
	}

	// The daemon and cspool deliver trust the private certificate through
	// SSL_CERT_FILE.
	tlsEnv := append(env, "SSL_CERT_FILE="+certPath)
	imapPort := freePort(t)
	daemon := startProc(t, "cspool imap-server", dir, tlsEnv, bin, "imap-server", "--user-key=user.sec",
		"--spool-key=spool.pub", "--user-public-key=user.pub", "--port", fmt.Sprint(imapPort),
		"--status-addr", "", "--spool-server", url)
	password := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))
	msg := "Subject: sealed in transit too\r\n\r\nhello over https\r\n"
	if err := os.WriteFile(filepath.Join(dir, "message"), []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	runCmd(t, dir, tlsEnv, "message", bin, "deliver", "--user="+user, "--user-key=user.pub", "--spool-key=spool.sec",
		"--spool-server", url)
	msgs := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), user, password, 1)
	if len(msgs) != 1 || string(msgs[0]) != msg {
		t.Fatalf("IMAP shows %d messages (%q), want the one delivered over HTTPS", len(msgs), msgs)
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 40*time.Second)
	if log := server.stderr.String(); !strings.Contains(log, "http="+url) {
		t.Errorf("server start line lacks http=%s:\n%s", url, log)
	}
}

// A TLS key file every user of the machine may read was taken silently
// (docs/CONFIG.md asks for mode 0600), where a cspool secret key file so
// open is refused. Now it is refused too, naming the file; a group's read
// (Debian's ssl-cert group) is still taken.
func TestWorldReadableTLSKey(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir)
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadServerTLS(cert, key)
	if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "every user") {
		t.Errorf("a TLS key of mode 0644: %v, want a refusal naming the file", err)
	}
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := loadServerTLS(cert, key); err != nil {
		t.Errorf("a TLS key of mode 0640: %v", err)
	}
}

// The certificate and key given the other way round (--tls-cert the key,
// --tls-key the certificate, mode 0644 as certificates are) were refused
// for the certificate's mode, with the hint to chmod 600 the certificate,
// which led to a second error. Now the swap is named, and the mode of a
// certificate is not held against it.
func TestSwappedTLSFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir)
	_, err := loadServerTLS(key, cert)
	var h *hintError
	if err == nil || !errors.As(err, &h) {
		t.Fatalf("certificate and key swapped: %v, want an error with a hint", err)
	}
	if strings.Contains(err.Error(), "every user") || strings.Contains(h.hint, "chmod") {
		t.Errorf("certificate and key swapped: %v (hint %q), want no word about the certificate's mode", err, h.hint)
	}
	if !strings.Contains(h.hint, "swapped") || !strings.Contains(h.hint, "--tls-cert "+cert) || !strings.Contains(h.hint, "--tls-key "+key) {
		t.Errorf("certificate and key swapped: hint %q, want it to name the swap and the right order", h.hint)
	}
	// The right order still refuses a world-readable key.
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadServerTLS(cert, key); err == nil || !strings.Contains(err.Error(), "every user") {
		t.Errorf("a TLS key of mode 0644: %v, want a refusal", err)
	}
}

// TestLongPollsParkOverTLS: a device's long-poll over TLS leaves net/http
// while it waits, as one over plain HTTP does (internal/api/park.go): the
// server holds its connection and TLS state, not two goroutines and
// net/http's buffers. Before, TLS was put on top of the API's listener by
// http.Server.ServeTLS, and such a read waited in its handler: 10,000
// devices over TLS held 20,000 goroutines, 223 MB of stacks and twice the
// live heap of the same devices now (docs/BENCHMARKS.md, "Figure 5 over
// TLS"). The answers, the renewal on the same connection, the answer to
// plain HTTP on the TLS port and the log line of a failed handshake stay
// as net/http's TLS server gave them.
func TestLongPollsParkOverTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	certPath, keyPath, pool := selfSigned(t, dir)
	env := append(os.Environ(), "USER="+loginName())
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	port, pport := freePort(t), freePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--tls-cert", certPath, "--tls-key", keyPath, "--spool-key", "spool.sec",
		"--pprof-addr", fmt.Sprintf("127.0.0.1:%d", pport))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	trusting := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	health, err := api.NewClient(url, "", mustKey(t), trusting())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err = health.Health(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS server not healthy after 20 s: %v\n%s", err, server.stderr)
		}
	}

	// Serving goroutines, from the server's own goroutine dump: reads
	// waiting in net/http's handlers, and parked reads.
	waiting := func() (inHandlers, parked int) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=2", pport))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		for g := range strings.SplitSeq(string(b), "\n\n") {
			switch {
			case strings.Contains(g, "net/http.(*conn).serve") && strings.Contains(g, "api.(*Server).read"):
				inHandlers++
			case strings.Contains(g, "api.(*Server).waitParked") && strings.Contains(g, "spool.WaitForTip"):
				parked++
			}
		}
		return inHandlers, parked
	}

	const devices = 6
	type poll struct {
		entries []spool.Entry
		err     error
	}
	clients := make([]*api.Client, devices)
	results := make([]chan poll, devices)
	for i := range clients {
		// Each device its own key, log and connection.
		c, err := api.NewClient(url, fmt.Sprintf("user%d", i), mustKey(t), trusting())
		if err != nil {
			t.Fatal(err)
		}
		clients[i], results[i] = c, make(chan poll, 1)
		go func() {
			es, _, err := c.Read(ctx, 0, 0, 0, time.Minute)
			results[i] <- poll{es, err}
		}()
	}
	var inHandlers, parked int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if inHandlers, parked = waiting(); inHandlers+parked >= devices || time.Now().After(deadline) {
			break
		}
	}
	if inHandlers != 0 || parked != devices {
		t.Errorf("%d long-polls over TLS wait in net/http's handlers and %d are parked, want 0 and %d", inHandlers, parked, devices)
	}

	// An entry wakes its device's parked read, answered over TLS; the
	// renewal is served on the same connection.
	if _, err := clients[0].Append(ctx, "user0", [][]byte{[]byte("over TLS, parked")}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results[0]:
		if r.err != nil || len(r.entries) != 1 || string(r.entries[0].Data) != "over TLS, parked" {
			t.Fatalf("the parked long-poll answered %d entries, %v; want the entry appended", len(r.entries), r.err)
		}
	case <-ctx.Done():
		t.Fatal("the parked long-poll over TLS was not answered")
	}
	reused := make(chan bool, 1)
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { reused <- ci.Reused }})
	if es, head, err := clients[0].Read(tctx, 0, 0, 0, 0); err != nil || head != 1 || len(es) != 1 {
		t.Fatalf("read after the parked answer: %d entries, head %d, %v", len(es), head, err)
	}
	if !<-reused {
		t.Error("the read after a parked answer over TLS opened a new connection, want the same one kept alive")
	}

	// Plain HTTP on the TLS port: the answer a Go HTTPS server gives,
	// which the device's client turns into its hint, and a log line.
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	answer, _ := io.ReadAll(conn)
	conn.Close()
	if !strings.HasPrefix(string(answer), "HTTP/1.0 400 Bad Request\r\n") || !strings.Contains(string(answer), "Client sent an HTTP request to an HTTPS server") {
		t.Errorf("plain HTTP to the TLS port answered %q, want 400 and what a Go HTTPS server says", answer)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(server.stderr.String(), `msg="TLS handshake failed"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the failed handshake of plain HTTP on the TLS port was not logged")
		}
	}
	cancel()
	server.stop(t, syscall.SIGTERM, 40*time.Second)
}
