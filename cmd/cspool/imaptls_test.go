package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/sendtest"
	"cspool/internal/statuspage"
)

// imaplibTLS logs in over implicit TLS and over STARTTLS with a CA file,
// and prints what it saw.
const imaplibTLS = `
import imaplib, ssl, sys
host, port, tport, user, pw, ca = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
M = imaplib.IMAP4_SSL(host, int(tport), ssl_context=ctx, timeout=30)
print("imaps caps:", " ".join(M.capabilities))
M.login(user, pw)
typ, d = M.select("INBOX")
print("imaps select:", typ, d[0].decode())
M.logout()
M = imaplib.IMAP4(host, int(port), timeout=30)
print("plain caps:", " ".join(M.capabilities))
M.starttls(ssl_context=ctx)
print("starttls caps:", " ".join(M.capabilities))
M.login(user, pw)
typ, d = M.select("INBOX")
print("starttls select:", typ, d[0].decode())
M.logout()
try:
    imaplib.IMAP4_SSL(host, int(tport), ssl_context=ssl.create_default_context(), timeout=30)
    print("untrusted: connected")
except ssl.SSLError as e:
    print("untrusted: refused")
`

// TestIMAPServerTLS runs cspool imap-server with --tls-cert, --tls-key and
// --imaps-port (a throwaway CA) and logs in with Python's imaplib over
// IMAPS and over STARTTLS; a client without the CA is refused. With
// --addr on an address that is not a loopback one and no TLS, the daemon
// warns that the password would cross the network in the clear; with TLS
// it does not.
func TestIMAPServerTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	runCmd(t, dir, env, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	ca := sendtest.NewCA(t, dir)
	_, certFile, keyFile := ca.Leaf(t, dir)
	httpPort, imapPort, imapsPort := freePort(t), freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(httpPort))
	waitHealthy(t, url, server)
	daemon := startProc(t, "cspool imap-server", dir, env, bin, "imap-server", "--spool-server", url,
		"--port", fmt.Sprint(imapPort), "--imaps-port", fmt.Sprint(imapsPort), "--status-addr", "",
		"--tls-cert", certFile, "--tls-key", keyFile)
	out := daemon.waitOutput(t, "state:", 30*time.Second)
	password := daemonPassword(t, out)
	for _, want := range []string{"security: STARTTLS", fmt.Sprintf("imaps:    port %d, security SSL/TLS", imapsPort)} {
		if !strings.Contains(out, want) {
			t.Errorf("settings lack %q:\n%s", want, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "message"), []byte("Subject: tls\r\n\r\nhello\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCmd(t, dir, env, "message", bin, "deliver", "--user", "alice", "--user-key", "user.pub", "--spool-key", "spool.sec")
	// The delivery reaches INBOX once the daemon has read and applied it:
	// wait for that on the plain port, so that every connection below
	// finds the message.
	fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 1)

	got := runCmd(t, dir, nil, "", python, "-c", imaplibTLS, "127.0.0.1", fmt.Sprint(imapPort), fmt.Sprint(imapsPort),
		"alice", password, ca.File)
	caps := func(what string) []string {
		for _, l := range strings.Split(got, "\n") {
			if v, ok := strings.CutPrefix(l, what+" caps: "); ok {
				return strings.Fields(v)
			}
		}
		t.Fatalf("no %s capabilities in:\n%s", what, got)
		return nil
	}
	has := func(caps []string, c string) bool {
		for _, x := range caps {
			if x == c {
				return true
			}
		}
		return false
	}
	if c := caps("imaps"); has(c, "STARTTLS") || !has(c, "AUTH=PLAIN") {
		t.Errorf("IMAPS capabilities %v, want AUTH=PLAIN and no STARTTLS", c)
	}
	// imaplib connects from 127.0.0.1: a login in the clear is allowed
	// there, STARTTLS offered.
	if c := caps("plain"); !has(c, "STARTTLS") || has(c, "LOGINDISABLED") {
		t.Errorf("plain port capabilities %v, want STARTTLS and no LOGINDISABLED from this machine", c)
	}
	if c := caps("starttls"); has(c, "STARTTLS") {
		t.Errorf("capabilities after STARTTLS %v still offer STARTTLS", c)
	}
	for _, want := range []string{"imaps select: OK 1", "starttls select: OK 1", "untrusted: refused"} {
		if !strings.Contains(got, want) {
			t.Errorf("imaplib output lacks %q:\n%s", want, got)
		}
	}

	// --addr beyond localhost: 192.0.2.1 (TEST-NET-1) is on no interface,
	// so the daemon stops at listening, after the warning.
	warn := "listens on 192.0.2.1 without TLS"
	for _, c := range []struct {
		name  string
		extra []string
		warn  bool
	}{
		{"without TLS", nil, true},
		{"with TLS", []string{"--tls-cert", certFile, "--tls-key", keyFile}, false},
	} {
		args := append([]string{"imap-server", "--spool-server", url, "--addr", "192.0.2.1", "--port", fmt.Sprint(imapPort),
			"--status-addr", "", "--db", "other.db", "--password-file", "pw"}, c.extra...)
		if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runExitStdin(t, dir, env, nil, bin, args...)
		if code == 0 || !strings.Contains(stderr, "192.0.2.1") {
			t.Fatalf("%s: exit %d, want a failure to listen on 192.0.2.1\n%s%s", c.name, code, stdout, stderr)
		}
		if got := strings.Contains(stderr, "cspool: warning: IMAP "+warn); got != c.warn {
			t.Errorf("%s: warning printed %v, want %v:\n%s", c.name, got, c.warn, stderr)
		}
	}
}

// TestSettingsWildcardAddr: the daemon of docs/IMAP.md's "TLS" recipe
// (--addr 0.0.0.0) told the mail client "server: ::", the wildcard its
// listener reports, which names no machine. It now names 127.0.0.1 for
// this machine and this machine's own name for the others; a listener on
// one address is named by it.
func TestSettingsWildcardAddr(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ip   net.IP
		want string
	}{
		{net.IPv6unspecified, "127.0.0.1 on this machine; from another, this machine's name or address (listening on every address)"},
		{net.IPv4zero, "127.0.0.1 on this machine; from another, this machine's name or address (listening on every address)"},
		{net.IPv4(192, 0, 2, 10), "192.0.2.10"},
		{net.IPv4(127, 0, 0, 1), "127.0.0.1"},
	} {
		var out bytes.Buffer
		e := &env{stdout: &out, stderr: &bytes.Buffer{}}
		printSettings(e, &net.TCPAddr{IP: c.ip, Port: 1143}, nil, true, "alice", imapPassword{value: "pw", file: "/home/alice/mail.db.password"},
			"/home/alice/mail.db", statuspage.PageState{})
		if got := settingValue(t, out.String(), "server"); got != c.want {
			t.Errorf("listening on %s: the settings say server %q, want %q", c.ip, got, c.want)
		}
	}
}
