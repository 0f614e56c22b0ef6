package recovery

import (
	"context"
	"errors"
	"testing"

	"cspool/internal/command"
)

// TestRecoverOntoEmptyLog: a device recovered against a spool whose log of
// the user is empty, as another server's, or one started on a mistyped
// spool directory, is (restored head 0). Recover wrote the device's whole
// history there and the device adopted it, with no question; now it
// refuses and writes nothing, unless told the spool was restored from a
// backup made before the user's first mail (Config.OntoEmpty).
func TestRecoverOntoEmptyLog(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	empty := r.backup() // before the user's first mail
	a := r.device("a")
	m := r.deliver(3)
	a.mustSync()
	a.change(&command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{m[0]}})

	r.restore(empty)
	head := func() uint64 {
		h, err := r.store.Head(context.Background(), user)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	rep, err := a.recover()
	if !errors.Is(err, ErrNothingInCommon) {
		t.Fatalf("recover onto an empty log: %v (report %+v), want ErrNothingInCommon", err, rep)
	}
	if h := head(); h != 0 {
		t.Fatalf("the refused recovery wrote the log up to %d", h)
	}

	rep, err = Recover(context.Background(), Config{User: user, UserKey: r.userKey, SpoolKey: r.spoolKey.Public(),
		Source: a.client, Store: a.ms, Logger: r.quiet, OntoEmpty: true})
	if err != nil {
		t.Fatalf("recover onto the empty log, told to: %v", err)
	}
	if rep.Base != 0 || rep.Bodies != 3 || head() == 0 {
		t.Errorf("report %+v, spool head %d: want base 0, the 3 messages put back, a restoration on the spool", rep, head())
	}
	a.mustSync()
	if got := a.dump(); len(got.Mailboxes) == 0 {
		t.Errorf("the device holds no mailbox after adopting its recovery")
	}
}
