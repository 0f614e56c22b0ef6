package imapd

import (
	"strings"
	"sync"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// TestSilentStoreKeepsOthersChanges: while a session's own STORE
// +FLAGS.SILENT is in flight, its messages' flag changes are held back
// from it (it reports its own change itself, or not at all); a change to
// the same message by another device, applied in that window, must still
// reach it, also when the session's own STORE changes nothing (the flag
// was set already), as when a client marks \Deleted a message another
// client had marked.
func TestSilentStoreKeepsOthersChanges(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	deliverAll(r, a)
	rc := dialRaw(t, a.addr)
	rc.cmdLines("a1", `LOGIN alice "`+testPassword+`"`)
	rc.cmdLines("a2", "SELECT INBOX")
	rc.cmdLines("s0", `STORE 2 +FLAGS.SILENT (\Flagged)`)
	ids := messageIDs(t, a, 2)
	var once sync.Once
	a.sub.set(false, func([]*command.Command) {
		once.Do(func() {
			// Another device's change, applied while the STORE waits.
			a.synced(r.Append(r.UserKey, &command.Command{Kind: command.SetFlags, Flags: []string{"FromOther"}, IDs: ids}))
		})
	})
	got := rc.cmdLines("s1", `STORE 2 +FLAGS.SILENT (\Flagged)`)
	a.sub.set(false, nil)
	got = append(got, rc.cmdLines("n1", "NOOP")...)
	if !strings.Contains(joinLines(got), "FromOther") {
		t.Errorf("the other device's change to message 2 never came:\n%s", joinLines(got))
	}
}

// TestOwnStoreAfterQueuedChange: an update queued for a session before its
// own STORE on the same message, and written after the STORE's answer,
// must not leave the older flags showing: the session's own change then
// comes after it too.
func TestOwnStoreAfterQueuedChange(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	deliverAll(r, a)
	rc := dialRaw(t, a.addr)
	rc.cmdLines("a1", `LOGIN alice "`+testPassword+`"`)
	rc.cmdLines("a2", "SELECT INBOX")
	other := a.client(nil)
	mustSelect(t, other, "INBOX")
	for _, silent := range []bool{false, true} {
		storeUID(t, other, 2, "Stale") // queued for rc, not written yet
		store := "STORE 2 -FLAGS (Stale)"
		if silent {
			store = "STORE 2 -FLAGS.SILENT (Stale)"
		}
		got := rc.cmdLines("s1", store)
		got = append(got, rc.cmdLines("n1", "NOOP")...)
		last := ""
		for _, l := range got {
			if strings.HasPrefix(l.text, "* 2 FETCH") {
				last = l.text
			}
		}
		if strings.Contains(last, "Stale") || last == "" {
			t.Errorf("%s: the last FETCH of message 2 is %q:\n%s", store, last, joinLines(got))
		}
	}
}

// messageIDs returns the ids of INBOX messages by UID on device d.
func messageIDs(t *testing.T, d *device, uids ...uint32) []command.ID {
	t.Helper()
	mb, err := d.store.MailboxByName(t.Context(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var list []mailstore.UID
	for _, u := range uids {
		list = append(list, mailstore.UID(u))
	}
	byUID, err := d.store.MessageIDs(t.Context(), mb.ID, list)
	if err != nil {
		t.Fatal(err)
	}
	var ids []command.ID
	for _, u := range list {
		ids = append(ids, byUID[u])
	}
	return ids
}
