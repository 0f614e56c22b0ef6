package statuspage

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestStatusDocExample: the report docs/STATUS.md shows under "cspool
// status" is what WriteText prints for it, line for line. The example had
// no "Search index:" line, which every daemon prints.
func TestStatusDocExample(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/STATUS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## `cspool status`\n")
	if !ok {
		t.Fatal("docs/STATUS.md has no \"## `cspool status`\"")
	}
	_, example, ok := strings.Cut(section, "\n```\ncspool daemon for alice, as of ")
	if !ok {
		t.Fatal("docs/STATUS.md, cspool status: no example starting \"cspool daemon for alice, as of\"")
	}
	example, _, _ = strings.Cut("cspool daemon for alice, as of "+example, "```")

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	r := &Report{
		Version:   ReportVersion,
		Generated: now,
		IMAP:      IMAPSettings{Host: "127.0.0.1", Port: 1143, User: "alice", PasswordFile: "/home/alice/.cspool/alice.db.password"},
		Page:      PageState{URL: "http://127.0.0.1:1144/"},
		Sync: SyncState{State: StateCurrent, Position: 42, Head: 42, Connected: true, LastContact: now.Add(-3 * time.Second),
			Spool: "https://spool.example.org", Readers: 4},
		Checkpoint: Checkpoint{Position: 30},
		Search:     &SearchIndex{},
		Mailboxes: []Mailbox{{Name: "Archive"}, {Name: "Drafts"}, {Name: "INBOX", Messages: 7, Unseen: 3, Size: 20 << 10},
			{Name: "Junk"}, {Name: "Sent"}, {Name: "Trash"}},
	}
	var b strings.Builder
	if err := WriteText(&b, r, now); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != example {
		t.Errorf("docs/STATUS.md shows\n%s\nand cspool status prints for that report\n%s", example, got)
	}
}
