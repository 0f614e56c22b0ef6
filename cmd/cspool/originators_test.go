package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// smtplibEach submits each file given on one connection, as smtplibSubmit
// does, and prints the file's name and the DATA reply of each, refused or
// not.
const smtplibEach = `
import smtplib, sys, os
host, port, user, password, sender, rcpt = sys.argv[1:7]
s = smtplib.SMTP(host, int(port), timeout=60)
s.ehlo("client.example.org")
s.login(user, password)
for path in sys.argv[7:]:
    s.mail(sender)
    s.rcpt(rcpt)
    try:
        code, msg = s.data(open(path, "rb").read())
    except smtplib.SMTPResponseException as e:
        code, msg = e.smtp_code, e.smtp_error
        s.rset()
    print(os.path.basename(path), code, msg.decode())
s.quit()
`

// pythonFrom prints, for each file given, its Subject and the display
// name and address of each From address, as Python's email package reads
// them (the default policy, what a program written today uses) and as its
// older API does (email.utils.getaddresses, which takes a comment for a
// display name).
const pythonFrom = `
import email, email.utils, sys
from email import policy
for path in sys.argv[1:]:
    raw = open(path, "rb").read()
    m = email.message_from_bytes(raw, policy=policy.default)
    old = email.message_from_bytes(raw)
    now = ["%s|%s" % (a.display_name, a.addr_spec) for a in m["From"].addresses]
    then = ["%s|%s" % a for a in email.utils.getaddresses(old.get_all("From"))]
    print(m["Subject"], " ".join(now), " ".join(then))
`

// TestOriginatorFormsThroughPostfix: forms of From submitted to alice's
// device, which relays through a real Postfix to bob. Those naming an
// address that is not alice's outside the address (a display name, a
// comment, an encoded word, through an "@" or a look-alike of one such as
// U+FF20) or holding a group are refused at DATA; before,
// each was relayed, and Python's email read boss@example.net as the name
// of the author bob got. So are blanks before a field's colon: Postfix
// took a first line "From : alice@..." for a mailbox separator line
// (X-Mailbox-Line) and added a From of its own. Those naming only alice
// reach bob, and every reader there sees alice alone; Postfix passes a
// line of blanks in the header on as it is, adding no From.
func TestOriginatorFormsThroughPostfix(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs Postfix")
	}
	p := startPostfixPeers(t, needPostfix(t))
	refused := []string{
		`From: "boss@example.net" <alice@example.test>`,
		"From: alice@example.test (boss@example.net)",
		"From: <alice@example.test> (boss@example.net)",
		"From: =?utf-8?q?boss=40example=2Enet?= <alice@example.test>",
		"From: =?utf-8?q?ok?= =?x-unknown?q?boss=40example=2Enet?= <alice@example.test>",
		`From: "boss@example.net": alice@example.test;`,
		"From: Friends: alice@example.test;",
		"From: alice@example.test\r\nX-A: a\r\n \r\nFrom: boss@example.net",
		"From : alice@example.test",
		"X-B: b\r\nFrom\t: alice@example.test",
		"From: \"boss\uff20example.net\" <alice@example.test>",
		"From: =?utf-8?q?boss=EF=B9=ABexample=2Enet?= <alice@example.test>",
		"Author: boss@example.net\r\nFrom: alice@example.test",
		"From: =?utf-8?b?Ym9zc0BleGFtcGxlLm5ldA?= <alice@example.test>",
		"From: alice@example.test (boss\xa3\xc0example.net)",
		"From: =?utf-8?q?boss=A3=C0example=2Enet?= <alice@example.test>",
	}
	accepted := []string{
		"FROM: alice@example.test",
		`From: "alice@example.test" <alice@example.test>`,
		"X-A: a\r\n \r\nFrom: Alice <alice@example.test>",
	}
	var files []string
	write := func(name, from string) {
		path := filepath.Join(p.work, name+".eml")
		msg := from + "\r\nTo: bob@example.test\r\nSubject: " + name + "\r\nMessage-ID: <" + name + "@example.test>\r\n" +
			"Date: Mon, 30 Nov 2026 10:00:00 +0100\r\n\r\nhi\r\n"
		if err := os.WriteFile(path, []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	for i, f := range refused {
		write(fmt.Sprintf("refused%d", i), f)
	}
	for i, f := range accepted {
		write(fmt.Sprintf("accepted%d", i), f)
	}
	out := runCmd(t, p.work, p.env, "", p.python, append([]string{"-c", smtplibEach, "127.0.0.1", fmt.Sprint(p.smtpPort),
		"alice", "pw", "alice@example.test", "bob@example.test"}, files...)...)
	replies := strings.Split(strings.TrimSpace(out), "\n")
	if len(replies) != len(files) {
		t.Fatalf("submission: %q", out)
	}
	for i, r := range replies {
		name, reply, _ := strings.Cut(r, " ")
		if i < len(refused) && !strings.HasPrefix(reply, "553 ") && !strings.HasPrefix(reply, "554 ") {
			t.Errorf("%q: %s, want it refused", refused[i], reply)
		}
		if i >= len(refused) && !strings.HasPrefix(reply, "250 ") {
			t.Errorf("%q (%s): %s, want it queued", accepted[i-len(refused)], name, reply)
		}
	}
	inbox := fetchIMAP(t, p.python, "127.0.0.1", fmt.Sprint(p.bobIMAP), "bob", "pw", len(accepted))
	if len(inbox) != len(accepted) {
		t.Fatalf("bob has %d messages, want the %d accepted", len(inbox), len(accepted))
	}
	dir := t.TempDir()
	var got []string
	for i, m := range inbox {
		path := filepath.Join(dir, fmt.Sprintf("%d.eml", i))
		if err := os.WriteFile(path, m, 0o600); err != nil {
			t.Fatal(err)
		}
		got = append(got, path)
		if strings.Contains(string(m), "X-A: a\r\n \r\n") != strings.Contains(string(m), "Subject: accepted2") {
			t.Errorf("bob's copy, the line of blanks:\n%s", m)
		}
	}
	read := runCmd(t, dir, p.env, "", p.python, append([]string{"-c", pythonFrom}, got...)...)
	lines := strings.Split(strings.TrimSpace(read), "\n")
	if len(lines) != len(accepted) {
		t.Fatalf("Python read:\n%s", read)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Errorf("Python read %q, want a From in both readings", l)
			continue
		}
		for _, a := range f[1:] {
			if strings.Contains(a, "boss") || !strings.HasSuffix(a, "|alice@example.test") || strings.Count(a, "@") > 2 {
				t.Errorf("Python read %q: %q, want alice alone", f[0], a)
			}
		}
		if n := len(f) - 1; n != 2 {
			t.Errorf("Python read %q: %d From addresses, want one in each reading", l, n)
		}
	}
}
