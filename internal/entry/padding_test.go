package entry

import (
	"fmt"
	"testing"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// deviceCommand is a command of kind k over n messages as a device writes
// it: with the head it had applied, and for the kinds that name a mailbox,
// a mailbox name and id.
func deviceCommand(k command.Kind, n int) *command.Command {
	c := &command.Command{Kind: k, Seen: &command.Head{Pos: 123456, Hash: make([]byte, 32)}}
	for i := range n {
		var id command.ID
		id[0], id[1], id[15] = byte(i>>8), byte(i), 0x5a
		c.IDs = append(c.IDs, id)
	}
	mailboxID := command.ID{0xab, 15: 1}
	switch k {
	case command.SetFlags, command.ClearFlags, command.ReplaceFlags:
		c.Flags = []string{`\Seen`}
	case command.Copy, command.Move:
		c.Mailbox, c.MailboxID = "Archive/2025", mailboxID
	case command.CreateMailbox:
		c.Mailbox = "Projects/Padding"
	case command.RenameMailbox:
		c.Mailbox, c.NewName, c.MailboxID = "Projects/Padding", "Archive/Projects/Padding", mailboxID
	case command.DeleteMailbox, command.Subscribe, command.Unsubscribe:
		c.Mailbox, c.MailboxID = "Projects/Padding", mailboxID
	}
	return c
}

// sealedLen seals c as the user's device does (default options) and
// returns the size the spool sees.
func sealedLen(t *testing.T, user *keys.SecretKey, c *command.Command) int {
	t.Helper()
	b, _, err := Seal(c, user, user.Public(), "alice", nil)
	if err != nil {
		t.Fatalf("sealing %s: %v", c.Kind, err)
	}
	return len(b)
}

// The spool's view of a device's small commands: from the size alone it
// must not learn which command an entry holds, nor how many messages it
// touches (docs/SECURITY.md §2). Before padding to buckets, an Expunge of
// one message and SetFlags of 1, 2 and 5 messages sealed to four different
// sizes.
func TestSpoolCannotTellSmallCommands(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		kind command.Kind
		n    int
	}{
		{command.Expunge, 1}, {command.SetFlags, 1}, {command.SetFlags, 2}, {command.SetFlags, 5},
		{command.Expunge, 5}, {command.ClearFlags, 1}, {command.Move, 2}, {command.CreateMailbox, 0},
	}
	sizes := map[int][]string{}
	for _, c := range cases {
		n := sealedLen(t, f.user, deviceCommand(c.kind, c.n))
		sizes[n] = append(sizes[n], fmt.Sprintf("%s of %d", c.kind, c.n))
	}
	if len(sizes) != 1 {
		t.Fatalf("the spool tells small commands apart by their sealed size: %v, want one size for all", sizes)
	}
}

// Every command a device writes, for each number of messages, seals to
// the size of its bucket, whatever its kind: 1, 2 and 5 messages and
// every mailbox command to the smallest bucket (1 KiB inner plaintext),
// 100 messages to the next (2 KiB). Small messages a device appends fall
// in the smallest bucket too.
func TestCommandSizesInBuckets(t *testing.T) {
	f := newFixture(t)
	withIDs := []command.Kind{command.SetFlags, command.ClearFlags, command.ReplaceFlags,
		command.Copy, command.Move, command.Expunge}
	mailboxCmds := []command.Kind{command.CreateMailbox, command.RenameMailbox, command.DeleteMailbox,
		command.Subscribe, command.Unsubscribe}
	bucket := SealedLen
	for _, n := range []int{1, 2, 5, 100} {
		want := bucket(1 << 10)
		if n == 100 {
			want = bucket(2 << 10)
		}
		for _, k := range withIDs {
			if got := sealedLen(t, f.user, deviceCommand(k, n)); got != want {
				t.Errorf("%s of %d messages: sealed to %d bytes, want %d", k, n, got, want)
			}
		}
	}
	for _, k := range mailboxCmds {
		if got, want := sealedLen(t, f.user, deviceCommand(k, 0)), bucket(1<<10); got != want {
			t.Errorf("%s: sealed to %d bytes, want %d", k, got, want)
		}
	}
	for _, size := range []int{0, 100, 800} {
		c := &command.Command{Kind: command.Append, Mailbox: "Drafts", Date: 1764000000000, Flags: []string{`\Draft`},
			Body: make([]byte, size), Seen: &command.Head{Pos: 99, Hash: make([]byte, 32)}}
		if got, want := sealedLen(t, f.user, c), bucket(1<<10); got != want {
			t.Errorf("Append of %d bytes: sealed to %d bytes, want %d", size, got, want)
		}
	}
}
