package imapd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// imapfilterConfig is a user's filter: urgent mail flagged, then
// mailing-list mail out of INBOX into folders of their own (made when
// missing, one named in German), spam deleted and expunged, and ordinary
// mail (matched by a regular expression on its header) given keywords
// and marked seen.
const imapfilterConfig = `options.timeout = 20
options.create = true
options.expunge = true
options.starttls = false

local account = IMAP {
  server = os.getenv('CSPOOL_HOST'),
  port = tonumber(os.getenv('CSPOOL_PORT')),
  username = 'alice',
  password = os.getenv('CSPOOL_PASSWORD'),
}

local inbox = account.INBOX

inbox:contain_subject('urgent'):mark_flagged()

inbox:contain_field('List-Id', 'dev.example.org'):move_messages(account['Lists/dev'])
inbox:contain_field('List-Id', 'other.example.org'):move_messages(account['Listen/Grüße'])

inbox:contain_field('X-Spam-Flag', 'YES'):delete_messages()

local ordinary = inbox:match_header('Subject: ordinary')
ordinary:add_flags({ 'Work', '$Label1' })
ordinary:mark_seen()
`

// TestImapfilter runs imapfilter with a small filter against a device
// holding list mail, spam, urgent and ordinary mail in INBOX: the list
// mail is moved to Lists/dev and Listen/Grüße (made by imapfilter), urgent
// mail flagged before it is moved keeps its flag, the spam is gone, the
// ordinary mail has its keywords and \Seen; a second run changes nothing,
// and a second device shows the same, UIDs too.
func TestImapfilter(t *testing.T) {
	t.Parallel()
	imapfilter := needTool(t, "imapfilter")
	r := newRig(t)
	a := r.device("a")
	msg := func(i int, subject, extra string) string {
		return fmt.Sprintf("From: Sender %d <s%d@example.org>\r\nTo: alice@example.net\r\nSubject: %s\r\n"+
			"Date: Mon, 02 Mar 2026 10:%02d:00 +0100\r\nMessage-ID: <%d.filter@example.org>\r\n%s\r\nBody %d.\r\n", i, i, subject, i, i, extra, i)
	}
	type kind struct {
		subject, extra, folder, flags string
	}
	kinds := []kind{
		{"list mail", "List-Id: Developers <dev.example.org>\r\n", "Lists/dev", ""},
		{"spam", "X-Spam-Flag: YES\r\n", "", ""},
		{"urgent: call me", "", "INBOX", `\Flagged`},
		{"ordinary", "", "INBOX", `$Label1 Work \Seen`},
		{"Gr\xc3\xbc\xc3\x9fe, urgent", "List-Id: <other.example.org>\r\n", "Listen/Gr&APwA3w-e", `\Flagged`},
	}
	want := map[string]map[string]string{"INBOX": {}, "Lists/dev": {}, "Listen/Gr&APwA3w-e": {}}
	var pos uint64
	for i := range 20 {
		k := kinds[i%len(kinds)]
		raw := msg(i, k.subject, k.extra)
		pos = r.Deliver([]byte(raw))
		if k.folder != "" {
			want[k.folder][raw] = k.flags
		}
	}
	a.synced(pos)

	home := filepath.Join(t.TempDir(), "home")
	if err := os.MkdirAll(filepath.Join(home, ".imapfilter"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(home, ".imapfilter", "config.lua")
	if err := os.WriteFile(cfg, []byte(imapfilterConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(a.addr)
	env := append(os.Environ(), "HOME="+home, "CSPOOL_HOST="+host, "CSPOOL_PORT="+port, "CSPOOL_PASSWORD="+testPassword)
	flagsOnly := regexp.MustCompile(` [^ ]+ [0-9]+$`) // the date and UID after the flags
	check := func(d *device, when string) folderSnapshot {
		t.Helper()
		w := loginWire(t, d.addr)
		got, _ := snapshot(t, w, true)
		w.ok("LOGOUT")
		for f, ms := range got {
			for raw, meta := range ms {
				if strings.Contains(raw, "X-Spam-Flag") {
					t.Errorf("%s: spam in %q: %.120q", when, f, raw)
				}
				if _, ok := want[f]; !ok && len(ms) > 0 {
					t.Errorf("%s: %q holds %.120q", when, f, raw)
					continue
				}
				fl, ok := want[f][raw]
				if !ok {
					t.Errorf("%s: %q holds %.120q, not wanted there", when, f, raw)
				} else if g := flagsOnly.ReplaceAllString(" "+meta, ""); strings.TrimSpace(g) != fl {
					t.Errorf("%s: in %q, %.120q has flags %q, want %q", when, f, raw, g, fl)
				}
			}
		}
		for f, ms := range want {
			var missing []string
			for raw := range ms {
				if _, ok := got[f][raw]; !ok {
					missing = append(missing, fmt.Sprintf("%.120q", raw))
				}
			}
			sort.Strings(missing)
			if len(missing) > 0 {
				t.Errorf("%s: %q lacks %d messages: %s", when, f, len(missing), strings.Join(missing, ", "))
			}
		}
		return got
	}
	runToolEnv(t, env, imapfilter, "-c", cfg)
	first := check(a, "after imapfilter")
	runToolEnv(t, env, imapfilter, "-c", cfg)
	if again := check(a, "after a second run"); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("a second run changed the device's folders")
	}
	b := r.device("b")
	b.synced(r.Head())
	if other := check(b, "on a second device"); fmt.Sprint(other) != fmt.Sprint(first) {
		t.Errorf("a second device shows other messages, flags or UIDs than the first")
	}
}

// imapfilterIdleConfig waits in IDLE on INBOX once, as a filter run as a
// daemon does in its loop, then files list mail.
const imapfilterIdleConfig = `options.timeout = 20
options.starttls = false

local account = IMAP {
  server = os.getenv('CSPOOL_HOST'),
  port = tonumber(os.getenv('CSPOOL_PORT')),
  username = 'alice',
  password = os.getenv('CSPOOL_PASSWORD'),
}

if not account.INBOX:enter_idle() then
  error('IDLE ended without news')
end
account.INBOX:contain_field('List-Id', 'dev.example.org'):move_messages(account['Lists/dev'])
`

// TestImapfilterIdle runs imapfilter waiting in IDLE, through a logging
// proxy: mail delivered while it waits wakes it, and it files the mail.
// The conversation holds no NO or BAD.
func TestImapfilterIdle(t *testing.T) {
	t.Parallel()
	imapfilter := needTool(t, "imapfilter")
	r := newRig(t)
	a := r.device("a")
	w := loginWire(t, a.addr)
	w.ok(`CREATE "Lists/dev"`)
	w.ok("LOGOUT")
	p := newIMAPProxy(t, a.addr)
	home := filepath.Join(t.TempDir(), "home")
	if err := os.MkdirAll(filepath.Join(home, ".imapfilter"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(home, ".imapfilter", "config.lua")
	if err := os.WriteFile(cfg, []byte(imapfilterIdleConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, imapfilter, "-c", cfg)
	cmd.Env = append(os.Environ(), "HOME="+home, "CSPOOL_HOST="+host, "CSPOOL_PORT="+port, "CSPOOL_PASSWORD="+testPassword)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	p.idlingNow(t, "INBOX", 20*time.Second)
	raw := "From: list@example.org\r\nTo: alice@example.net\r\nSubject: news\r\nList-Id: <dev.example.org>\r\nMessage-ID: <idle@example.org>\r\n\r\nNews.\r\n"
	a.synced(r.Deliver([]byte(raw)))
	if err := <-done; err != nil {
		t.Fatalf("imapfilter: %v\n%s", err, out.String())
	}
	w = loginWire(t, a.addr)
	got, _ := snapshot(t, w, false)
	if len(got["INBOX"]) != 0 || len(got["Lists/dev"]) != 1 {
		t.Errorf("INBOX holds %d messages and Lists/dev %d, want 0 and 1", len(got["INBOX"]), len(got["Lists/dev"]))
	}
	checkConversation(t, p.lines())
}
