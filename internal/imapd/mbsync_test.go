package imapd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/mailstore"
)

// TestMbsync pulls the mail store into a Maildir with mbsync, changes
// flags and deletes a message there, and pushes the changes back.
func TestMbsync(t *testing.T) {
	t.Parallel()
	mbsync, d, dir, host, port := clientRig(t, "mbsync")
	cfg := fmt.Sprintf(`IMAPAccount cspool
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
SubFolders Verbatim

Channel sync
Far :far:
Near :near:
Patterns *
Create Near
SyncState *
Sync All
Expunge Both
`, host, port, testPassword, dir, dir)
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
