package imapd

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/mailstore"
)

// TestPythonImaplib drives the server with Python's imaplib, a client
// written independently of go-imap.
func TestPythonImaplib(t *testing.T) {
	t.Parallel()
	python := needTool(t, "python3")
	r := newRig(t)
	d := r.device("a")
	bodies := []string{messages["multipart"],
		"From: z@example.org\r\nSubject: second\r\n\r\na zebra crossed\r\n",
		"From: y@example.org\r\nSubject: the third\r\n\r\nthird body\r\n"}
	var pos uint64
	for _, b := range bodies {
		pos = r.Deliver([]byte(b))
	}
	d.synced(pos)
	delivered := filepath.Join(t.TempDir(), "delivered.eml")
	if err := os.WriteFile(delivered, []byte(bodies[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(d.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "testdata/imaplib_e2e.py", host, port, "alice", testPassword, delivered)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var out []string
	for sc.Scan() {
		line := sc.Text()
		out = append(out, line)
		if line == "IDLING" {
			r.Deliver([]byte("Subject: while idling\r\n\r\nnew\r\n"))
			stdin.Write([]byte("go\n"))
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("imaplib script failed: %v\nstdout: %v\nstderr: %s", err, out, stderr.String())
	}
	if len(out) == 0 || out[len(out)-1] != "PASS" {
		t.Fatalf("imaplib script did not pass: %v %s", out, stderr.String())
	}
	// The store agrees with what the script did.
	bg := context.Background()
	m, err := d.store.Message(bg, mailstore.InboxID(), 1, 0)
	if err != nil || strings.Join(m.Flags, " ") != `\Flagged $Important` {
		t.Errorf("INBOX UID 1 flags %v, %v", m, err)
	}
	uids, _ := d.store.UIDs(bg, mailstore.InboxID())
	if len(uids) != 2 || uids[0] != 1 || uids[1] != mailstore.UID(4) {
		t.Errorf("INBOX UIDs %v, want [1 4]", uids)
	}
	for name, want := range map[string]int{"Archive": 1, "Trash": 1, "Drafts": 1} {
		mb, err := d.store.MailboxByName(bg, name)
		if err != nil || int(mb.Messages) != want {
			t.Errorf("%s: %+v %v, want %d messages", name, mb, err, want)
		}
	}
}
