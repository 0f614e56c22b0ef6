package imapd

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGetmail collects the mail with getmail6 (SimpleIMAPRetriever, on
// Python's imaplib) into a Maildir, deleting each message after it is
// delivered, through a proxy that records the conversation: every message
// arrives whole, INBOX is left empty, a second run fetches nothing, and
// the server answered no command NO or BAD.
func TestGetmail(t *testing.T) {
	t.Parallel()
	gm, d, dir, _, _ := clientRig(t, "getmail")
	proxy := newIMAPProxy(t, d.addr)
	host, port, _ := net.SplitHostPort(proxy.addr)
	// The delivery is a program (getmail's Maildir and mbox destinations
	// refuse to run as root, as CI does) that writes each message to a
	// file of its own. It first sleeps half a second: getmail installs its
	// SIGCHLD handler in the parent after the fork, so a program that
	// exits before that is never seen to end, and getmail waited its 60 s
	// for it (seen once, on a busy machine, after the server had answered
	// every command).
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	mda := filepath.Join(dir, "mda.sh")
	if err := os.WriteFile(mda, []byte("#!/bin/sh\nsleep 0.5\nexec cat > \""+out+"/m.$$\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(dir, "getmailrc")
	cfg := fmt.Sprintf(`[retriever]
type = SimpleIMAPRetriever
server = %s
port = %s
username = alice
password = %s
mailboxes = ("INBOX",)

[destination]
type = MDA_external
path = %s
allow_root_commands = true

[options]
read_all = false
delete = true
verbose = 1
`, host, port, testPassword, mda)
	if err := os.WriteFile(rc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		t.Helper()
		return runTool(t, gm, "--getmaildir", dir, "--rcfile", rc)
	}
	log := run()
	got, err := filepath.Glob(filepath.Join(out, "*"))
	if err != nil || len(got) != len(order) {
		t.Fatalf("getmail delivered %d messages, want %d (%v)\n%s", len(got), len(order), err, log)
	}
	for _, f := range got {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// getmail hands the message on with LF line ends and fields of
		// its own in the header (Return-Path, Delivered-To, Received
		// first, X-getmail-retrieved-from-mailbox last).
		found := false
		for _, m := range messages {
			lf := bytes.ReplaceAll([]byte(m), []byte("\r\n"), []byte("\n"))
			if bytes.HasSuffix(b, lf) || bytes.Equal(withoutGetmailFields(b), lf) {
				found = true
			}
		}
		if !found {
			t.Errorf("getmail delivered %q, none of the delivered messages", b)
		}
	}
	if inbox, _ := scanBox(t, d, "INBOX"); inbox != "" {
		t.Errorf("INBOX after getmail deleted what it fetched: %s, want empty", inbox)
	}
	log = run()
	if again, _ := filepath.Glob(filepath.Join(out, "*")); len(again) != len(order) {
		t.Errorf("a second getmail run delivered %d messages in all, want the %d of the first\n%s", len(again), len(order), log)
	}
	if !strings.Contains(log, "0 messages") {
		t.Errorf("a second getmail run did not report 0 messages:\n%s", log)
	}
	checkConversation(t, proxy.lines())
}

// withoutGetmailFields removes the header fields getmail adds to a message.
func withoutGetmailFields(b []byte) []byte {
	head, body, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return b
	}
	var kept []string
	dropping := false
	for _, l := range strings.Split(string(head), "\n") {
		if l != "" && (l[0] == ' ' || l[0] == '\t') {
			if !dropping {
				kept = append(kept, l)
			}
			continue
		}
		dropping = false
		for _, f := range []string{"Return-Path:", "Delivered-To:", "Received:", "X-getmail-retrieved-from-mailbox:"} {
			if strings.HasPrefix(l, f) {
				dropping = true
			}
		}
		if !dropping {
			kept = append(kept, l)
		}
	}
	return append([]byte(strings.Join(kept, "\n")+"\n\n"), body...)
}
