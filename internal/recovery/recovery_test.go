package recovery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// TestRecoverRestoredSpool: the spool is restored from a backup after two
// devices applied more of the log, one (b) more than the other (a), and a
// third (l), stopped before the backup, follows the restored log. a
// recovers: l and a converge, b is told to recover too, does, and every
// device ends with the same state holding everything any device had, with
// no UID naming two messages under one UIDVALIDITY.
func TestRecoverRestoredSpool(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b, l := r.device("a"), r.device("b"), r.device("l")
	m := r.deliver(4)
	for _, d := range []*device{a, b, l} {
		d.mustSync()
	}
	a.change(&command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{m[0]}})
	b.mustSync()
	l.mustSync()

	backup := r.backup()
	m = append(m, r.deliver(2)...) // m[4], m[5]
	a.mustSync()
	a.change(&command.Command{Kind: command.Expunge, IDs: []command.ID{m[1]}},
		&command.Command{Kind: command.Move, Mailbox: "Archive", IDs: []command.ID{m[2]}},
		&command.Command{Kind: command.CreateMailbox, Mailbox: "Projects"})
	b.mustSync()
	m = append(m, r.deliver(1)...) // m[6]: only b has it
	b.mustSync()
	b.change(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{m[4]}})
	before := map[string]*mailstore.State{"a": a.dump(), "b": b.dump(), "l": l.dump()}

	r.restore(backup)
	n := r.deliver(2) // after the restore, at positions a and b applied
	l.mustSync()
	l.change(&command.Command{Kind: command.SetFlags, Flags: []string{`\Answered`}, IDs: []command.ID{m[3]}})
	for _, d := range []*device{a, b} {
		if err := d.sync(); err == nil || !strings.Contains(err.Error(), "rolled back") {
			t.Fatalf("%s after the restore: %v, want the rollback alarm", d.name, err)
		}
	}

	rep, err := a.recover()
	if err != nil {
		t.Fatalf("recover on a: %v (report %+v)", err, rep)
	}
	if rep.Base != 5 || rep.Superseded != 5 || rep.Bodies != 2 || !slices.Equal(rep.Renewed, []string{"INBOX"}) {
		t.Errorf("report %+v: want base 5, 5 superseded entries, 2 bodies put back (m[4], m[5]), INBOX renewed", rep)
	}
	a.mustSync()
	l.mustSync()
	if alarms, _ := a.ms.Alarms(context.Background()); len(alarms) != 0 {
		t.Errorf("a keeps alarms after adopting its own restoration: %v", alarms)
	}
	if d := mailstore.Diff(a.dump(), l.dump(), 5); d != nil {
		t.Fatalf("l differs from a after the restoration: %v", d)
	}
	// b holds m[6] and a flag a never had: told to recover too.
	if err := b.sync(); err == nil || !strings.Contains(err.Error(), "run cspool recover on this device") {
		t.Fatalf("b after a's restoration: %v, want an alarm asking to recover b", err)
	}
	if _, err := a.recover(); !errors.Is(err, ErrNothingToRecover) {
		t.Errorf("recover again on a: %v, want ErrNothingToRecover", err)
	}
	rep, err = b.recover()
	if err != nil {
		t.Fatalf("recover on b: %v (report %+v)", err, rep)
	}
	if rep.Base != 5 || rep.Bodies != 1 {
		t.Errorf("report %+v: want base 5 and 1 body put back (m[6]; a put back the others)", rep)
	}
	last := r.deliver(1)
	c := r.device("c") // a new device
	for _, d := range []*device{b, a, l, c} {
		d.mustSync()
	}
	want := a.dump()
	for _, d := range []*device{b, l, c} {
		if diff := mailstore.Diff(want, d.dump(), 5); diff != nil {
			t.Errorf("%s differs from a: %v", d.name, diff)
		}
	}

	// What was acknowledged, on every side of the restore.
	where := map[command.ID]mailstore.MessageState{}
	for _, msg := range want.Messages {
		where[msg.ID] = msg
	}
	mbName := func(id command.ID) string {
		for _, mb := range want.Mailboxes {
			if mb.ID == id {
				return mb.Name
			}
		}
		return "?"
	}
	check := func(what string, id command.ID, box string, flags ...string) {
		t.Helper()
		msg, ok := where[id]
		if box == "" {
			if ok {
				t.Errorf("%s: present in %s, want it gone", what, mbName(msg.Mailbox))
			}
			return
		}
		if !ok || mbName(msg.Mailbox) != box || !slices.Equal(msg.Flags, flags) {
			t.Errorf("%s: present %v in %s with %v, want in %s with %v", what, ok, mbName(msg.Mailbox), msg.Flags, box, flags)
		}
	}
	check("m0, flagged before the backup", m[0], "INBOX", `\Flagged`)
	check("m1, expunged after the backup", m[1], "")
	check("m2, moved after the backup", m[2], "Archive")
	check("m3, answered after the restore", m[3], "INBOX", `\Answered`)
	check("m4, seen on b after the backup", m[4], "INBOX", `\Seen`)
	check("m5, delivered after the backup", m[5], "INBOX")
	check("m6, only b had it", m[6], "INBOX")
	check("n0, delivered after the restore", n[0], "INBOX")
	check("n1, delivered after the restore", n[1], "INBOX")
	check("the delivery after the recovery", last[0], "INBOX")
	if !slices.ContainsFunc(want.Mailboxes, func(mb mailstore.MailboxState) bool { return mb.Name == "Projects" }) {
		t.Error("Projects, created after the backup, is gone")
	}
	if len(want.Messages) != 9 {
		t.Errorf("%d messages, want 9", len(want.Messages))
	}

	// No UID names another message under the UIDVALIDITY a device showed.
	for name, old := range before {
		noUIDReused(t, name, old, want)
	}
	noUIDReused(t, "l", l.dump(), want)
}

// noUIDReused fails if a mailbox keeps its name and UIDVALIDITY from old to
// now while one of its UIDs names another message.
func noUIDReused(t *testing.T, device string, old, now *mailstore.State) {
	t.Helper()
	type key struct {
		box string
		uv  uint32
		uid uint32
	}
	names := func(st *mailstore.State) map[command.ID]mailstore.MailboxState {
		m := map[command.ID]mailstore.MailboxState{}
		for _, mb := range st.Mailboxes {
			m[mb.ID] = mb
		}
		return m
	}
	at := map[key]command.ID{}
	nb := names(now)
	for _, msg := range now.Messages {
		mb := nb[msg.Mailbox]
		at[key{mb.Name, mb.UIDValidity, msg.UID}] = msg.ID
	}
	ob := names(old)
	for _, msg := range old.Messages {
		mb := ob[msg.Mailbox]
		if id, ok := at[key{mb.Name, mb.UIDValidity, msg.UID}]; ok && id != msg.ID {
			t.Errorf("%s showed UID %d of %s (UIDVALIDITY %d) for message %s; now it names %s", device, msg.UID, mb.Name, mb.UIDValidity, msg.ID, id)
		}
	}
}

// interloper is the device's spool client with one delivery slipped in
// before the first conditional append of the message bytes (a batch of
// two) and of the restoration (one): mail arriving while the recovery
// runs.
type interloper struct {
	*api.Client
	r    *rig
	done map[int]bool
	ids  []command.ID
}

func (i *interloper) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	if !i.done[len(batch)] {
		i.done[len(batch)] = true
		i.ids = append(i.ids, i.r.deliver(1)...)
	}
	return i.Client.AppendAt(ctx, user, head, batch)
}

// TestRecoverWhileMailArrives: deliveries land while the recovery appends
// the message bytes and the restoration; it follows them and appends
// again, and the restoration holds them.
func TestRecoverWhileMailArrives(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b := r.device("a"), r.device("b")
	r.deliver(2)
	a.mustSync()
	backup := r.backup()
	r.deliver(2)
	a.mustSync()
	b.mustSync()
	r.restore(backup)
	r.deliver(1)
	il := &interloper{Client: a.client, r: r, done: map[int]bool{}}
	rep, err := Recover(context.Background(), Config{User: user, UserKey: r.userKey, SpoolKey: r.spoolKey.Public(),
		Source: il, Store: a.ms, Logger: r.quiet})
	if err != nil {
		t.Fatalf("recover: %v (report %+v)", err, rep)
	}
	if rep.Messages != 7 || rep.Attempts != 2 || len(il.ids) != 2 {
		t.Errorf("the restoration holds %d messages after %d attempts with %d deliveries during the recovery; want 7 (2 before the backup, 2 after, 1 after the restore, 2 during the recovery) after 2",
			rep.Messages, rep.Attempts, len(il.ids))
	}
	a.mustSync()
	b.mustSync()
	if d := mailstore.Diff(a.dump(), b.dump(), 5); d != nil {
		t.Errorf("b differs from a: %v", d)
	}
	got := map[command.ID]bool{}
	for _, m := range a.dump().Messages {
		got[m.ID] = true
	}
	for _, id := range il.ids {
		if !got[id] {
			t.Errorf("the delivery %s that arrived during the recovery is missing", id)
		}
	}
}
