package imapd

import (
	"context"
	"strings"
	"testing"

	"cspool/internal/command"
)

// TestLongNameDeletable: a mailbox whose name is longer than a command may
// carry (a RENAME of its parent raced another device's CREATE below it,
// and the log took both) can be renamed and deleted: the commands name it
// by id, with its name cut. They could not be submitted at all (NO
// [SERVERBUG]), on every device, until the parent was renamed back.
func TestLongNameDeletable(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	child := strings.Repeat("x", 990)
	w.ok(`CREATE "lp/` + child + `"`)
	ctx := context.Background()
	lp, err := d.store.MailboxByName(ctx, "lp")
	if err != nil {
		t.Fatal(err)
	}
	// The other device's RENAME, which its session allowed (the child
	// was not there yet when it checked).
	parent := strings.Repeat("y", 900)
	if _, err := d.sub.Submit(ctx, &command.Command{Kind: command.RenameMailbox, Mailbox: "lp", MailboxID: lp.ID, NewName: parent}); err != nil {
		t.Fatal(err)
	}
	long := parent + "/" + child
	if _, err := d.store.MailboxByName(ctx, long); err != nil {
		t.Fatalf("the mailbox of %d bytes: %v", len(long), err)
	}
	lit := func(s string) string { return "{" + itoa(len(s)) + "}\r\n" + s }
	w.ok("RENAME " + lit(long) + " " + lit(parent+"/short"))
	w.ok("RENAME " + lit(parent+"/short") + " " + lit("again"))
	if _, err := d.store.MailboxByName(ctx, "again"); err != nil {
		t.Fatalf("after the renames: %v", err)
	}
	// And DELETE, of another one so made.
	w.ok(`CREATE "lp2/` + child + `"`)
	parent = strings.Repeat("z", 900)
	long = parent + "/" + child
	lp2, err := d.store.MailboxByName(ctx, "lp2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.sub.Submit(ctx, &command.Command{Kind: command.RenameMailbox, Mailbox: "lp2", MailboxID: lp2.ID, NewName: parent}); err != nil {
		t.Fatal(err)
	}
	w.ok("DELETE " + lit(long))
	if _, err := d.store.MailboxByName(ctx, long); err == nil {
		t.Errorf("the mailbox of %d bytes is still there after DELETE", len(long))
	}
}
