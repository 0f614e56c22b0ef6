package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestDeliveryTrace delivers with the real binaries and peers, as an MTA
// does, and reads every message back over IMAP with imaplib: over LMTP
// (swaks) and through cspool deliver, each message starts with the
// Return-Path (the envelope sender, <> for the null sender) and
// Delivered-To (the recipient) fields a delivery agent adds (RFC 5321
// section 4.4), and the rest is the message as sent, byte for byte. What a
// mail transfer agent pipes to cspool deliver with its own Return-Path and
// Delivered-To (Postfix's local(8)) keeps those and loses the mbox "From "
// line in front of them.
func TestDeliveryTrace(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	swaks := needTool(t, "swaks", "swaks")
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	for _, name := range []string{"alice", "spool"} {
		runCmd(t, dir, env, "", bin, "gen-keys", name+".sec", name+".pub")
	}
	pub, err := keys.LoadPublic(filepath.Join(dir, "alice.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte("alice "+pub.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	httpPort, lmtpPort, imapPort := freePort(t), freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--users", "users", "--spool-dir", "spool",
		"--spool-key", "spool.sec", "--port", fmt.Sprint(httpPort), "--lmtp", fmt.Sprintf("127.0.0.1:%d", lmtpPort))
	waitHealthy(t, url, server)
	daemon := startProc(t, "cspool imap-server", dir, env, bin, "imap-server", "--user-key", "alice.sec",
		"--user-public-key", "alice.pub", "--spool-key", "spool.pub", "--db", "alice.db",
		"--spool-server", url, "--port", fmt.Sprint(imapPort), "--status-addr", "")
	password := daemonPassword(t, daemon.waitOutput(t, "password:", 30*time.Second))

	// swaks sends CRLF and adds a CRLF before the final ".", so what is
	// stored is the message and one CRLF.
	crlf := "From: Bob <bob@example.net>\r\nSubject: over LMTP\r\n\r\n8-bit caf\xc3\xa9\r\n..a dot\r\n"
	var want []string
	lmtp := func(from, to string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "msg")
		if err := os.WriteFile(path, []byte(crlf), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(swaks, "--protocol", "LMTP", "--server", "127.0.0.1", "--port", fmt.Sprint(lmtpPort),
			"--helo", "mx.example.org", "--from", from, "--to", to, "--data", "@"+path, "--timeout", "30").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "<-  250 2.0.0 ") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	}
	lmtp("bounces@example.net", "alice@example.org")
	want = append(want, "Return-Path: <bounces@example.net>\r\nDelivered-To: alice@example.org\r\n"+crlf+"\r\n")
	lmtp("<>", "Alice@example.org")
	want = append(want, "Return-Path: <>\r\nDelivered-To: Alice@example.org\r\n"+crlf+"\r\n")

	lf := "From: Bob <bob@example.net>\nSubject: through cspool deliver\n\nline\nFrom the start of a line\n"
	deliver := func(msg string, args ...string) {
		t.Helper()
		args = append([]string{"deliver", "--users", "users", "--user", "alice", "--spool-key", "spool.sec",
			"--spool-server", url, "--quiet"}, args...)
		if code, out, errOut := runExitStdin(t, dir, env, []byte(msg), bin, args...); code != 0 {
			t.Fatalf("cspool %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	// A message in Unix form (bare LF line ends, no CR) is stored with
	// CRLF ones, the fields added too, as it came over SMTP.
	network := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	deliver(lf, "--sender", "bob@example.net", "--recipient", "alice@example.org")
	want = append(want, network("Return-Path: <bob@example.net>\nDelivered-To: alice@example.org\n"+lf))
	deliver(crlf, "--sender", "", "--recipient", "alice@example.org")
	want = append(want, "Return-Path: <>\r\nDelivered-To: alice@example.org\r\n"+crlf)
	// Both addresses in angle brackets, as SMTP writes them: the
	// recipient's were kept, and quoted as part of a local part
	// (Delivered-To: "<alice"@example.org>).
	deliver(crlf, "--sender", "<bob@example.net>", "--recipient", "<alice@example.org>")
	want = append(want, "Return-Path: <bob@example.net>\r\nDelivered-To: alice@example.org\r\n"+crlf)
	// As Postfix's local(8) pipes it to a mailbox_command (local(8),
	// "EXTERNAL COMMAND DELIVERY"): the "From" line goes, the fields stay.
	piped := "Return-Path: <bob@example.net>\nX-Original-To: alice@example.org\nDelivered-To: alice@example.org\n" + lf
	deliver("From bob@example.net  Wed Nov 26 09:30:00 2025\n" + piped)
	want = append(want, network(piped))
	// A CR anywhere, and the message is taken as written: bare LF line
	// ends, and the fields end as its first line does.
	mixed := "From: Bob <bob@example.net>\nSubject: a CR\r in a field\n\nline\n"
	deliver(mixed, "--sender", "bob@example.net")
	want = append(want, "Return-Path: <bob@example.net>\n"+mixed)
	// Without an envelope the message is stored as it is, an obsolete
	// "From :" field included.
	old := "From : bob@example.net\r\nSubject: imported\r\n\r\nbody\r\n"
	deliver(old)
	want = append(want, old)

	msgs := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, len(want))
	if len(msgs) != len(want) {
		t.Fatalf("imaplib fetched %d messages, want %d", len(msgs), len(want))
	}
	for i := range want {
		if !bytes.Equal(msgs[i], []byte(want[i])) {
			t.Errorf("message %d over IMAP:\n%q\nwant\n%q", i+1, msgs[i], want[i])
		}
	}
	if strings.Contains(server.stderr.String(), "bounces@example.net") {
		t.Error("the server logged an envelope sender")
	}
}
