package imapd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"cspool/internal/mailstore"
)

// TestMbsync pulls the mail store into a Maildir with mbsync, changes
// flags and deletes a message there, and pushes the changes back.
func TestMbsync(t *testing.T) {
	t.Parallel()
	mbsync, d, dir, host, port := clientRig(t, "mbsync")
	cfg := mbsyncConfig(host, port, dir, `SubFolders Verbatim

Channel sync
Far :far:
Near :near:
Patterns *
Create Near
SyncState *
Sync All
Expunge Both
`)
	if err := os.MkdirAll(filepath.Join(dir, "mail"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() { t.Helper(); runTool(t, mbsync, "-c", cfgPath, "-a") }
	run()
	cur := filepath.Join(dir, "mail", "INBOX", "cur")
	files, err := filepath.Glob(filepath.Join(dir, "mail", "INBOX", "*", "*"))
	if err != nil || len(files) != 4 {
		t.Fatalf("Maildir INBOX has %d messages, want 4 (%v)", len(files), err)
	}
	for _, sub := range []string{"Sent", "Trash", "Archive"} {
		if _, err := os.Stat(filepath.Join(dir, "mail", sub)); err != nil {
			t.Errorf("mbsync did not create %s: %v", sub, err)
		}
	}
	// Find the files by content: mark "plain" seen and flagged, delete
	// "latin1".
	var plain, latin1 string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// mbsync stores LF line ends and adds an X-TUID field.
		switch {
		case strings.Contains(string(b), "Subject: Lunch on Friday\n"):
			plain = f
		case strings.Contains(string(b), "Viele Gr\xfc\xdfe aus M\xfcnchen"):
			latin1 = f
		}
	}
	if plain == "" || latin1 == "" {
		t.Fatal("mbsync did not copy the messages")
	}
	base := filepath.Base(plain)
	if i := strings.Index(base, ":2,"); i >= 0 {
		base = base[:i]
	}
	if err := os.Rename(plain, filepath.Join(cur, base+":2,FS")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(latin1); err != nil {
		t.Fatal(err)
	}
	run()
	bg := context.Background()
	var got []string
	err = d.store.Scan(bg, mailstore.InboxID(), 0, func(m *mailstore.Message) error {
		got = append(got, fmt.Sprintf("%d%v", m.UID, m.Flags))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `1[\Seen \Flagged] 2[] 4[]`
	if strings.Join(got, " ") != want {
		t.Errorf("INBOX after mbsync pushed back: %s, want %s", strings.Join(got, " "), want)
	}
}

// TestMbsyncMovingIn moves a mailbox into an empty device as a user coming
// from another provider would: mbsync pushes a Maildir (the old provider's
// export) up, making the folders, nested ones too. Every message arrives
// once, byte for byte as mbsync sends it (CRLF line ends, its X-TUID field
// added), with its flags (\Deleted and \Draft included) and its arrival
// date, a 1 MB one too; a second run sends nothing; and a second device
// shows the same.
func TestMbsyncMovingIn(t *testing.T) {
	t.Parallel()
	mbsync := needTool(t, "mbsync")
	r := newRig(t)
	a := r.device("a")
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(a.addr)
	type old struct {
		folder, flags, subject string
		date                   time.Time
		body                   string
	}
	big := strings.Repeat(strings.Repeat("QUJD", 19)+"\n", 14000)
	olds := []old{
		{"INBOX", "S", "read", time.Date(2020, 3, 2, 9, 0, 0, 0, time.UTC), "Hello\n"},
		{"INBOX", "FRS", "flagged and answered", time.Date(2020, 3, 2, 9, 1, 40, 0, time.UTC), "Hello\n"},
		{"INBOX", "ST", "marked deleted", time.Date(2020, 3, 2, 9, 3, 20, 0, time.UTC), "Hello\n"},
		{"INBOX", "D", "a draft", time.Date(2020, 3, 2, 9, 5, 0, 0, time.UTC), "Hello\n"},
		{"INBOX", "", "unread, 8-bit \xe4\xf6\xfc", time.Date(2020, 3, 2, 9, 6, 40, 0, time.UTC), "Gr\xfc\xdfe\n"},
		{"INBOX", "S", "one megabyte", time.Date(2020, 3, 2, 9, 10, 0, 0, time.UTC), big},
		{"INBOX", "", "no body", time.Date(2020, 3, 2, 9, 11, 40, 0, time.UTC), ""},
		{"Archive", "S", "archived", time.Date(2016, 12, 30, 23, 13, 20, 0, time.UTC), "Old\n"},
		{"Archive/2019", "S", "older still", time.Date(2019, 3, 21, 3, 40, 0, 0, time.UTC), "Older\n"},
		{"Archive/2019/Q1", "F", "deeper", time.Date(2019, 2, 1, 0, 0, 0, 0, time.UTC), "Deeper\n"},
		{"Spam [old]", "", "brackets in the folder's name", time.Date(2020, 3, 2, 9, 0, 0, 0, time.UTC), "Spam\n"},
	}
	sent := map[string][]byte{} // subject: what mbsync sends, less its X-TUID field
	for i, m := range olds {
		cur := filepath.Join(dir, "mail", m.folder, "cur")
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, "mail", m.folder, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		head := fmt.Sprintf("From: Old Friend <old@example.org>\nTo: me@example.net\nSubject: %s\n"+
			"Date: Mon, 02 Mar 2020 10:00:00 +0100\nMessage-ID: <%d@example.org>\n", m.subject, i)
		if m.subject == "one megabyte" {
			head += "MIME-Version: 1.0\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
		}
		raw := head + "\n" + m.body
		f := filepath.Join(cur, fmt.Sprintf("%d.M%dP1.oldhost:2,%s", 1600000000+i, i, m.flags))
		if err := os.WriteFile(f, []byte(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, m.date, m.date); err != nil {
			t.Fatal(err)
		}
		sent[m.subject] = []byte(strings.ReplaceAll(raw, "\n", "\r\n"))
	}
	cfg := mbsyncConfig(host, port, dir, `SubFolders Verbatim

Channel movein
Far :far:
Near :near:
Patterns INBOX Archive* Spam*
Create Far
SyncState *
Sync Push
CopyArrivalDate yes
`)
	cfgPath := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	tuid := regexp.MustCompile(`(?m)^X-TUID: [^\r\n]*\r\n`)
	flagOf := map[byte]string{'D': `\Draft`, 'F': `\Flagged`, 'R': `\Answered`, 'S': `\Seen`, 'T': `\Deleted`}
	check := func(d *device, when string) map[string]mailstore.UID {
		t.Helper()
		uids := map[string]mailstore.UID{}
		ctx := context.Background()
		seen := 0
		for _, folder := range []string{"INBOX", "Archive", "Archive/2019", "Archive/2019/Q1", "Spam [old]"} {
			mb, err := d.store.MailboxByName(ctx, folder)
			if err != nil {
				t.Fatalf("%s: mailbox %s: %v", when, folder, err)
			}
			err = d.store.Fetch(ctx, mb.ID, mailstore.UIDSet{{Start: 1, Stop: 0}}, mailstore.WantRaw, func(m *mailstore.Message) error {
				raw := tuid.ReplaceAll(m.Raw, nil)
				var o *old
				for i := range olds {
					if bytes.Equal(sent[olds[i].subject], raw) {
						o = &olds[i]
					}
				}
				if o == nil {
					t.Errorf("%s: %s UID %d is none of the messages sent: %.200q", when, folder, m.UID, m.Raw)
					return nil
				}
				seen++
				if o.folder != folder {
					t.Errorf("%s: %q is in %s, want %s", when, o.subject, folder, o.folder)
				}
				if _, dup := uids[o.subject]; dup {
					t.Errorf("%s: %q is there twice", when, o.subject)
				}
				uids[o.subject] = m.UID
				var want []string
				for _, c := range []byte("SRFTD") { // the store's order: \Seen \Answered \Flagged \Deleted \Draft
					if strings.IndexByte(o.flags, c) >= 0 {
						want = append(want, flagOf[c])
					}
				}
				if fmt.Sprint(m.Flags) != fmt.Sprint(want) {
					t.Errorf("%s: %q has flags %v, want %v", when, o.subject, m.Flags, want)
				}
				if !m.InternalDate.Equal(o.date) {
					t.Errorf("%s: %q arrived %v, want %v (the Maildir file's time)", when, o.subject, m.InternalDate, o.date)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if seen != len(olds) {
			t.Errorf("%s: %d messages, want %d", when, seen, len(olds))
		}
		return uids
	}
	runTool(t, mbsync, "-c", cfgPath, "-a")
	first := check(a, "after the move")
	runTool(t, mbsync, "-c", cfgPath, "-a")
	if again := check(a, "after a second run"); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("a second run changed the UIDs: %v, then %v", first, again)
	}
	b := r.device("b")
	b.synced(r.Head())
	if other := check(b, "on a second device"); fmt.Sprint(other) != fmt.Sprint(first) {
		t.Errorf("a second device has UIDs %v, the first %v", other, first)
	}
}

// mbsyncConfig is an mbsync configuration for user alice at host:port
// (the far store) and a Maildir under dir/mail (the near one), then rest:
// its channel, whose lines may continue the Maildir store's first.
func mbsyncConfig(host, port, dir, rest string) string {
	return fmt.Sprintf(`IMAPAccount cspool
Host %s
Port %s
User alice
Pass "%s"
SSLType None
AuthMechs LOGIN

IMAPStore far
Account cspool

MaildirStore near
Path %s/mail/
Inbox %s/mail/INBOX
`, host, port, testPassword, dir, dir) + rest
}
