package deliver

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pythonLMTP is a client on Python's smtplib.LMTP. smtplib reads one reply
// after DATA, so the script reads the other recipients' replies itself.
// Arguments: host port message-file rcpt...; output: one "RCPT code" line
// per RCPT and one "DATA code" line per accepted recipient.
const pythonLMTP = `
import smtplib, sys
host, port, path, rcpts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
msg = open(path, 'rb').read()
c = smtplib.LMTP(host, port, local_hostname="python.test", timeout=30)
c.ehlo('python.test')
code, _ = c.mail('sender@example.net')
assert code == 250, code
ok = []
for r in rcpts:
    code, _ = c.rcpt(r)
    print('RCPT', r, code)
    if code == 250:
        ok.append(r)
if ok:
    code, text = c.data(msg)
    print('DATA', ok[0], code, text.decode(errors='replace'))
    for r in ok[1:]:
        code, text = c.getreply()
        print('DATA', r, code, text.decode(errors='replace'))
c.quit()
`

func TestLMTPPythonSmtplib(t *testing.T) {
	py := requireTool(t, "python3")
	f := newFixture(t, "alice", "bob")
	addr := serve(t, f.d, LMTPOptions{})
	host, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	script := filepath.Join(dir, "lmtp.py")
	if err := os.WriteFile(script, []byte(pythonLMTP), 0o600); err != nil {
		t.Fatal(err)
	}
	// smtplib sends bytes as they are (no line-ending rewrite), dot-stuffs
	// lines starting with "." and ends the data with CRLF.
	msgs := []struct {
		name string
		msg  []byte
	}{
		{"headers and body", []byte("From: p@example.net\r\nSubject: py\r\n\r\nhello\r\n.dot\r\n")},
		{"NUL and 8-bit", []byte("Subject: \xc3\xa9\r\n\r\n\x00\x01\xff\r\n")},
		{"bare LF, no headers", []byte("line one\nline two\r\n")},
	}
	for _, m := range msgs {
		t.Run(m.name, func(t *testing.T) {
			before := map[string]int{"alice": len(f.bodies(t, "alice")), "bob": len(f.bodies(t, "bob"))}
			path := filepath.Join(dir, "msg")
			if err := os.WriteFile(path, m.msg, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(py, script, host, port, path, "alice@example.org", "ghost@example.org", "bob@example.org").CombinedOutput()
			if err != nil {
				t.Fatalf("python: %v\n%s", err, out)
			}
			wantLines := []string{
				"RCPT alice@example.org 250",
				"RCPT ghost@example.org 550",
				"RCPT bob@example.org 250",
				"DATA alice@example.org 250 2.0.0 <alice@example.org> delivered",
				"DATA bob@example.org 250 2.0.0 <bob@example.org> delivered",
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != len(wantLines) {
				t.Fatalf("python output:\n%s\nwant %d lines", out, len(wantLines))
			}
			for i, w := range wantLines {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("python line %d: %q, want prefix %q", i, lines[i], w)
				}
			}
			for _, u := range []string{"alice", "bob"} {
				got := f.bodies(t, u)
				if len(got) != before[u]+1 {
					t.Fatalf("%s has %d entries, want %d", u, len(got), before[u]+1)
				}
				if !bytes.Equal(got[len(got)-1], m.msg) {
					t.Errorf("%s: stored %s, want %s", u, short(got[len(got)-1]), short(m.msg))
				}
			}
		})
	}
}

func TestLMTPSwaks(t *testing.T) {
	swaks := requireTool(t, "swaks")
	f := newFixture(t, "alice", "bob")
	addr := serve(t, f.d, LMTPOptions{})
	host, port, _ := net.SplitHostPort(addr)
	// swaks sends CRLF line endings, expands %TOKENS% and always adds a CRLF
	// before the final ".", so the message has neither bare LF nor "%", and
	// the stored message is one CRLF longer.
	msg := []byte("From: s@example.net\r\nSubject: swaks \xc3\xa9\r\n\r\nbody\x00with NUL\r\n..leading dots\r\n")
	path := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(path, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(swaks, "--protocol", "LMTP", "--server", host, "--port", port,
		"--helo", "swaks.test", "--from", "s@example.net",
		"--to", "alice@example.org,ghost@example.org,bob@example.org",
		"--data", "@"+path, "--timeout", "30").CombinedOutput()
	// swaks exits non-zero when any recipient is refused; the transcript
	// says what happened to each.
	transcript := string(out)
	for _, w := range []string{
		"<** 550 5.1.1 no such user here",
		"<-  250 2.0.0 <alice@example.org> delivered",
		"<-  250 2.0.0 <bob@example.org> delivered",
	} {
		if !strings.Contains(transcript, w) {
			t.Errorf("swaks transcript lacks %q (exit %v):\n%s", w, err, transcript)
		}
	}
	want := append(append([]byte{}, msg...), "\r\n"...)
	for _, u := range []string{"alice", "bob"} {
		got := f.bodies(t, u)
		if len(got) != 1 || !bytes.Equal(got[0], want) {
			t.Errorf("%s: %d entries; want one, byte for byte %s", u, len(got), short(want))
			for _, g := range got {
				t.Logf("stored %s", short(g))
			}
		}
	}
}
