package hostile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
	"cspool/internal/statuspage"
	"cspool/internal/syncer"
)

// rejections returns the device's rejection records by position.
func rejections(t *testing.T, d *device) map[uint64]mailstore.Rejection {
	t.Helper()
	rej, err := d.ms.Rejected(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]mailstore.Rejection{}
	for _, r := range rej {
		out[r.Pos] = r
	}
	return out
}

// TestAlteredCiphertext: the spool flips a byte of an entry's ciphertext
// and, as a consistent liar, serves the chain hashes of the altered log. A
// single device cannot tell this from a corrupt entry: it rejects the entry
// as corrupt, records it, and syncs on without an alarm (the mail is
// withheld, not changed). TestDetectedWhenHistoriesMeet shows the alarm
// once another device's history meets this one.
func TestAlteredCiphertext(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.proxy.Set("d", &View{Rewrite: Flip(3, -20)})
	r.deliver(5)
	d.mustSync(t)
	rej := rejections(t, d)
	if len(rej) != 1 || rej[3].Reason != mailstore.Reason(entry.ErrCorrupt.Error()) {
		t.Fatalf("rejections %+v: want exactly position 3, reason %q", rej, entry.ErrCorrupt.Error())
	}
	if got := d.position(t); got != 5 {
		t.Fatalf("position %d: want 5", got)
	}
	if n := len(d.inbox(t)); n != 4 {
		t.Fatalf("%d messages in INBOX: want 4 (the altered one is not applied)", n)
	}
}

// TestNaiveLiar: the same rewrites with the server's real chain headers
// kept: caught at once by the single device, before it applies anything.
func TestNaiveLiar(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		rewrite func([]spool.Entry) []spool.Entry
		phrase  string
	}{
		{"drop renumbered", Drop(7, true), "do not hash to the head"},
		{"reorder", Swap(6, 7), "do not hash to the head"},
		{"alter ciphertext", Flip(7, -20), "do not hash to the head"},
		{"replace", Replace(7, []byte("not an entry")), "do not hash to the head"},
		{"truncate below the device", Truncate(3), "rolled back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			d := r.device("d")
			r.deliver(5)
			d.mustSync(t)
			before := d.state(t)
			r.deliver(5)
			r.proxy.Set("d", &View{Rewrite: tc.rewrite, KeepHeaders: true})
			alarmed(t, d, d.sync(t), tc.phrase, 5, before)
		})
	}
}

// TestForgedSpoolCommands: the operator signs commands other than Deliver
// with the spool key (which it holds) and appends them through the real
// API, which lets the spool key append. Each opens and verifies (the spool
// is a trusted author) and is then rejected as forbidden: nothing changes,
// no alarm, the sync goes on.
func TestForgedSpoolCommands(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(3)
	d.mustSync(t)
	ids := []command.ID{d.inbox(t)[0].ID}
	forged := []*command.Command{
		{Kind: command.Expunge, IDs: ids},
		{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: ids},
		{Kind: command.Move, Mailbox: "Trash", IDs: ids},
		{Kind: command.DeleteMailbox, Mailbox: "Archive"},
		{Kind: command.CreateMailbox, Mailbox: "Phish"},
		{Kind: command.Append, Mailbox: "INBOX", Date: 1, Body: message(7)},
	}
	var batch [][]byte
	for _, c := range forged {
		batch = append(batch, r.seal(c))
	}
	first, err := r.spool.Append(context.Background(), user, batch)
	if err != nil {
		t.Fatal(err)
	}
	d.mustSync(t)
	rej := rejections(t, d)
	for i, c := range forged {
		got, ok := rej[first+uint64(i)]
		want := "the spool may only deliver, not " + c.Kind.String()
		if !ok || got.Reason != mailstore.ReasonForbidden || got.Detail != want {
			t.Errorf("forged %s at %d: rejection %+v: want reason %q, detail %q", c.Kind, first+uint64(i), got, mailstore.ReasonForbidden, want)
		}
	}
	if len(rej) != len(forged) {
		t.Errorf("%d rejections: want %d", len(rej), len(forged))
	}
	// The sync goes on, but the misuse of the spool key is an alarm on
	// every surface, and stays one after a restart.
	st := d.s.Status()
	if st.Alarm != "" {
		t.Errorf("alarm %q: a forbidden entry is rejected without stopping the sync", st.Alarm)
	}
	wantMisuse := fmt.Sprintf("the spool's key signed %d entries that only the user may write (the newest at position %d: the spool may only deliver, not Append); they were rejected and the mailbox is unchanged, but whoever holds the spool key tried to change it",
		len(forged), first+uint64(len(forged))-1)
	if st.Misuse != wantMisuse {
		t.Errorf("misuse %q\nwant %q", st.Misuse, wantMisuse)
	}
	if got := st.Alert(); got != "cspool integrity alarm: "+wantMisuse {
		t.Errorf("IMAP alert %q", got)
	}
	if got := statuspage.Alarms(st); !slices.Contains(got, wantMisuse) {
		t.Errorf("status page alarms %q: want the misuse", got)
	}
	base, err := r.proxy.Listen("d-restarted")
	if err != nil {
		t.Fatal(err)
	}
	again := r.deviceAt("d", base, false)
	if got := again.s.Status().Misuse; got != wantMisuse {
		t.Errorf("after a restart, misuse %q", got)
	}
	if got := d.position(t); got != first+uint64(len(forged))-1 {
		t.Errorf("position %d: want the sync past the forgeries", got)
	}
	// What the user sees is untouched (the state's position moved on).
	if n := len(d.inbox(t)); n != 3 {
		t.Errorf("%d messages in INBOX: want the 3 delivered, untouched", n)
	}
	for _, m := range d.inbox(t) {
		if len(m.Flags) != 0 {
			t.Errorf("message %s has flags %v: want none", m.ID, m.Flags)
		}
	}
	if _, err := d.ms.MailboxByName(context.Background(), "Phish"); err == nil {
		t.Error("the forged CreateMailbox created a mailbox")
	}
	if _, err := d.ms.MailboxByName(context.Background(), "Archive"); err != nil {
		t.Errorf("the forged DeleteMailbox deleted Archive: %v", err)
	}
}

// TestCutShortBody: a read body without its end marker is a broken
// transfer, not a lie: the client discards the read, the device applies
// nothing from it and raises no alarm, and syncs once the body is whole.
func TestCutShortBody(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(3)
	d.mustSync(t)
	r.deliver(3)
	r.proxy.Set("d", &View{CutShort: true})
	err := d.sync(t)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Kind != api.ErrTransport || errors.Is(err, syncer.ErrIntegrity) {
		t.Fatalf("sync over a cut body: %v: want a transport error, no alarm", err)
	}
	if d.position(t) != 3 || d.s.Status().Alarm != "" {
		t.Fatalf("position %d, alarm %q: want 3 and none", d.position(t), d.s.Status().Alarm)
	}
	r.proxy.Set("d", nil)
	d.mustSync(t)
	if d.position(t) != 6 {
		t.Fatalf("position %d after the body came whole: want 6", d.position(t))
	}
}

// TestSpoolSignedSeenHead: the operator signs with the spool key a
// delivery, and a command only the user may write, each carrying a head
// its author claims to have applied (command.Head): one another history's
// hash at a position the device applied, the other a position at its own.
// A head is evidence only under the user's key: the spool's view proves
// nothing, so neither is checked. The delivery applies, the forgery is
// rejected as forbidden with the misuse alarm, and the sync goes on;
// before, each raised the integrity alarm of a fork (or of a reordering)
// written by a device of the user, and the sync stopped there for good.
func TestSpoolSignedSeenHead(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(3)
	d.mustSync(t)
	ids := []command.ID{d.inbox(t)[0].ID}
	other := bytes.Repeat([]byte{0xab}, 32)
	forged := []*command.Command{
		{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(100), Seen: &command.Head{Pos: 2, Hash: other}},
		{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: ids, Seen: &command.Head{Pos: 9, Hash: other}},
	}
	var batch [][]byte
	for _, c := range forged {
		batch = append(batch, r.seal(c))
	}
	first, err := r.spool.Append(context.Background(), user, batch)
	if err != nil {
		t.Fatal(err)
	}
	r.deliver(1)
	if err := d.sync(t); err != nil {
		t.Fatalf("sync over spool-signed heads: %v (alarm %q): want no alarm", err, d.s.Status().Alarm)
	}
	if a := d.s.Status().Alarm; a != "" {
		t.Fatalf("alarm %q: a head the spool signed is not evidence", a)
	}
	if got := d.position(t); got != first+2 {
		t.Errorf("position %d: want %d, the sync past both", got, first+2)
	}
	if n := len(d.inbox(t)); n != 5 {
		t.Errorf("%d messages in INBOX: want 5, the spool's delivery with its head among them", n)
	}
	rej := rejections(t, d)
	if got := rej[first+1]; got.Reason != mailstore.ReasonForbidden || len(rej) != 1 {
		t.Errorf("rejections %+v: want the SetFlags at %d alone, forbidden", rej, first+1)
	}
	if d.s.Status().Misuse == "" {
		t.Error("no misuse alarm for the spool-signed SetFlags")
	}
}

// TestOtherUsersEntries: the spool puts in alice's log entries sealed to
// her key for another user, bob (a users file that gives two users one
// key, which the server refuses to load, or an operator who copies them
// there): a delivery for bob, and a change a device of bob's signed with
// the shared key. Neither applies, the sync goes on without an integrity
// alarm, and the alarm for entries not meant for this log says what they
// are: sealed to this user's key, for another user. Before, it said they
// were sealed to another key, which no device of the user could open, and
// sent the user to look for the holder of that key.
func TestOtherUsersEntries(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(2)
	d.mustSync(t)
	var batch [][]byte
	for _, c := range []struct {
		cmd    *command.Command
		author *keys.SecretKey
	}{
		{&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(50)}, r.spoolKey},
		{&command.Command{Kind: command.CreateMailbox, Mailbox: "FromBob"}, r.userKey},
	} {
		b, _, err := entry.Seal(c.cmd, c.author, r.userKey.Public(), "bob", nil)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, b)
	}
	first, err := r.spool.Append(context.Background(), user, batch)
	if err != nil {
		t.Fatal(err)
	}
	d.mustSync(t)
	if got := d.position(t); got != first+1 {
		t.Errorf("position %d: want %d, past both", got, first+1)
	}
	if n := len(d.inbox(t)); n != 2 {
		t.Errorf("%d messages in INBOX: want the 2 delivered to alice", n)
	}
	if _, err := d.ms.MailboxByName(context.Background(), "FromBob"); err == nil {
		t.Error("bob's CreateMailbox applied in alice's mailbox")
	}
	for pos, rj := range rejections(t, d) {
		if !strings.Contains(rj.Detail, `sealed for user "bob"`) {
			t.Errorf("rejection at %d: %+v: want its detail to name bob", pos, rj)
		}
	}
	if m := d.s.Status().Misdelivered; !strings.Contains(m, "2 entries of the log (the newest at position 4) are sealed to this user's key but for another user of the spool") {
		t.Errorf("alarm %q: want it to say the entries are sealed to this key for another user", m)
	}
}
