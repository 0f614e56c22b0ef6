package imapd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"cspool/internal/mailstore"
)

// clientRig is a device holding the test messages in INBOX, for a mail
// client run as a separate program: the client's path, the device, a
// folder for the client's files, and the device's host and port.
func clientRig(t *testing.T, tool string) (path string, d *device, dir, host, port string) {
	t.Helper()
	path = needTool(t, tool)
	r := newRig(t)
	d = r.device("a")
	deliverAll(r, d)
	host, port, _ = net.SplitHostPort(d.addr)
	return path, d, t.TempDir(), host, port
}

// runTool runs a mail client to its end, within a minute.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runToolEnv(t, nil, name, args...)
}

// runEmacs runs Emacs in batch mode on the script testdata/script, with
// env added to the environment, as runTool runs a client.
func runEmacs(t *testing.T, emacs, script string, env ...string) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	return runToolEnv(t, append(os.Environ(), env...), emacs, "--batch", "-Q", "-l", path)
}

// runToolEnv is runTool with the environment env (nil: this process's).
func runToolEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(name), err, out)
	}
	return string(out)
}

// scanBox lists a mailbox of the store as "UID[flags]" in UID order, and
// the raw messages by UID.
func scanBox(t *testing.T, d *device, name string) (string, map[mailstore.UID][]byte) {
	t.Helper()
	ctx := context.Background()
	mb, err := d.store.MailboxByName(ctx, name)
	if err != nil {
		t.Fatalf("mailbox %s: %v", name, err)
	}
	var got []string
	raw := map[mailstore.UID][]byte{}
	err = d.store.Fetch(ctx, mb.ID, mailstore.UIDSet{{Start: 1, Stop: 0}}, mailstore.WantRaw, func(m *mailstore.Message) error {
		got = append(got, fmt.Sprintf("%d%v", m.UID, m.Flags))
		raw[m.UID] = bytes.Clone(m.Raw)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, " "), raw
}

// TestOfflineIMAP syncs the mail store both ways with OfflineIMAP, a
// Python client with its own way of finding the UID of what it uploads:
// the messages come down whole, and a flag change, a deletion, a message
// written into Drafts and a folder made with a message in it go up, once
// each, however often it runs.
func TestOfflineIMAP(t *testing.T) {
	t.Parallel()
	oi, d, dir, host, port := clientRig(t, "offlineimap")
	mail := filepath.Join(dir, "mail")
	cfg := fmt.Sprintf(`[general]
accounts = cspool
metadata = %s/meta
ui = basic

[Account cspool]
localrepository = near
remoterepository = far

[Repository near]
type = Maildir
localfolders = %s

[Repository far]
type = IMAP
remotehost = %s
remoteport = %s
remoteuser = alice
remotepass = %s
ssl = no
starttls = no
`, dir, mail, host, port, testPassword)
	cfgPath := filepath.Join(dir, "offlineimaprc")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(mail, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func() { t.Helper(); runTool(t, oi, "-c", cfgPath, "-o", "-u", "basic") }
	run()
	files, err := filepath.Glob(filepath.Join(mail, "INBOX", "*", "*"))
	if err != nil || len(files) != len(order) {
		t.Fatalf("Maildir INBOX has %d messages, want %d (%v)", len(files), len(order), err)
	}
	// OfflineIMAP writes each message as it came, with LF line ends; the
	// one without a header it writes after an empty one (a blank line
	// first), as Python's email package makes of it.
	var plain, latin1 string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for k, m := range messages {
			lf := bytes.ReplaceAll([]byte(m), []byte("\r\n"), []byte("\n"))
			if bytes.Equal(b, []byte(m)) || bytes.Equal(b, lf) || k == "broken" && bytes.Equal(b, append([]byte("\n"), lf...)) {
				found = true
				switch k {
				case "plain":
					plain = f
				case "latin1":
					latin1 = f
				}
			}
		}
		if !found {
			t.Errorf("%s is none of the delivered messages byte for byte:\n%q", filepath.Base(f), b)
		}
	}
	if plain == "" || latin1 == "" {
		t.Fatal("OfflineIMAP did not copy the messages")
	}
	for _, sub := range []string{"Sent", "Trash", "Archive", "Drafts"} {
		if _, err := os.Stat(filepath.Join(mail, sub)); err != nil {
			t.Errorf("OfflineIMAP did not make %s: %v", sub, err)
		}
	}

	// Mark "plain" seen and flagged, delete "latin1", write a draft and a
	// new folder with a message.
	base := filepath.Base(plain)
	if i := strings.Index(base, ":2,"); i >= 0 {
		base = base[:i]
	}
	if err := os.Rename(plain, filepath.Join(mail, "INBOX", "cur", base+":2,FS")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(latin1); err != nil {
		t.Fatal(err)
	}
	draft := "From: alice@example.net\r\nTo: bob@example.org\r\nSubject: written offline\r\n" +
		"Message-ID: <offline-1@example.net>\r\n\r\nI wrote this on the train.\r\n"
	for _, sub := range []string{"Drafts/new", "Projects/new", "Projects/cur", "Projects/tmp"} {
		if err := os.MkdirAll(filepath.Join(mail, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(mail, "Drafts", "new", "100.local:2,D"), []byte(draft), 0o600); err != nil {
		t.Fatal(err)
	}
	project := "From: alice@example.net\r\nSubject: plan\r\n\r\nstep one\r\n"
	if err := os.WriteFile(filepath.Join(mail, "Projects", "new", "101.local:2,"), []byte(project), 0o600); err != nil {
		t.Fatal(err)
	}
	run()
	run() // a second run changes nothing: nothing goes up twice

	inbox, _ := scanBox(t, d, "INBOX")
	if want := `1[\Seen \Flagged] 2[] 4[]`; inbox != want {
		t.Errorf("INBOX after OfflineIMAP pushed back: %s, want %s", inbox, want)
	}
	for box, want := range map[string]string{"Drafts": draft, "Projects": project} {
		list, raw := scanBox(t, d, box)
		if len(raw) != 1 {
			t.Errorf("%s holds %s, want the one message OfflineIMAP uploaded", box, list)
			continue
		}
		for _, b := range raw {
			// OfflineIMAP may add a header of its own; the message is
			// there whole after it.
			if !bytes.HasSuffix(b, []byte(want[strings.Index(want, "Subject:"):])) {
				t.Errorf("%s holds %q, want %q", box, b, want)
			}
		}
	}
	// Locally too every message is there once, the uploads named with the
	// UIDs the server gave them.
	var names []string
	local, _ := filepath.Glob(filepath.Join(mail, "*", "*", "*"))
	for _, f := range local {
		rel, _ := filepath.Rel(mail, f)
		box := strings.SplitN(rel, string(filepath.Separator), 2)[0]
		if !strings.Contains(filepath.Base(f), ",U=") {
			t.Errorf("%s has no UID in its name after the sync", rel)
		}
		names = append(names, box)
	}
	sort.Strings(names)
	if got, want := strings.Join(names, " "), "Drafts INBOX INBOX INBOX Projects"; got != want {
		t.Errorf("Maildir after the syncs holds %s, want %s", got, want)
	}
}

// TestFetchmail collects the mail as fetchmail does for a user who reads
// it elsewhere: it fetches every message, hands each to a delivery
// program, and deletes and expunges it on the server; the messages arrive
// whole and INBOX is left empty.
func TestFetchmail(t *testing.T) {
	t.Parallel()
	fm, d, dir, host, port := clientRig(t, "fetchmail")
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	mda := filepath.Join(dir, "mda.sh")
	script := "#!/bin/sh\nexec cat > \"" + out + "/m.$$\"\n"
	if err := os.WriteFile(mda, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(dir, "fetchmailrc")
	cfg := fmt.Sprintf("poll %s service %s protocol IMAP user \"alice\" password \"%s\" sslproto \"\" mda \"%s\" fetchall\n",
		host, port, testPassword, mda)
	if err := os.WriteFile(rc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// fetchmail keeps its state (the .fetchids of POP, a lock) in HOME.
	runFetchmail := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, fm, "-f", rc, "--nosslcertck", "--nodetach")
		cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("fetchmail: %v\n%s", err, b)
		}
	}
	runFetchmail()
	got, err := filepath.Glob(filepath.Join(out, "*"))
	if err != nil || len(got) != len(order) {
		t.Fatalf("fetchmail handed over %d messages, want %d (%v)", len(got), len(order), err)
	}
	for _, f := range got {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// fetchmail puts a Received field of its own first and hands the
		// message on with LF line ends.
		found := false
		for _, m := range messages {
			lf := bytes.ReplaceAll([]byte(m), []byte("\r\n"), []byte("\n"))
			if bytes.HasSuffix(b, lf) || bytes.HasSuffix(b, []byte(m)) {
				found = true
			}
		}
		if !found {
			t.Errorf("fetchmail handed over %q, none of the delivered messages", b)
		}
	}
	if inbox, _ := scanBox(t, d, "INBOX"); inbox != "" {
		t.Errorf("INBOX after fetchmail: %s, want empty", inbox)
	}
}
