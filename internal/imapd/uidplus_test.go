package imapd

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// TestUIDPlusAfterNewUIDValidity makes INBOX's UIDVALIDITY on the device
// change between a session reading INBOX for an APPEND, COPY or MOVE into
// it and the apply that gives the message its UID: the session's submit
// waits, first, for a take-back (a COPY queued offline into INBOX whose
// UID the log gave to a delivery) to give INBOX a new UIDVALIDITY. The
// APPENDUID or COPYUID must pair the UID with the UIDVALIDITY the store
// has it under, and the store must hold the message there. Before, it
// paired the UIDVALIDITY read before the submit, the old one, with a UID
// of the new numbering: a client caching by the pair (mbsync) filed the
// message under an identity INBOX never had.
func TestUIDPlusAfterNewUIDValidity(t *testing.T) {
	t.Parallel()
	for _, kind := range []command.Kind{command.Append, command.Copy, command.Move} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			a := r.device("a")
			deliverAll(r, a)
			ctx := context.Background()
			c := a.client(nil)
			body := []byte(fmt.Sprintf("From: a@example.org\r\nSubject: placed by %s\r\n\r\nbody\r\n", kind))
			if kind != command.Append {
				if err := c.Create("Src", nil).Wait(); err != nil {
					t.Fatalf("CREATE Src: %v", err)
				}
				ac := c.Append("Src", int64(len(body)), nil)
				if _, err := ac.Write(body); err != nil {
					t.Fatal(err)
				}
				if err := ac.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := ac.Wait(); err != nil {
					t.Fatalf("APPEND to Src: %v", err)
				}
				mustSelect(t, c, "Src")
			}
			inbox, err := a.store.MailboxByName(ctx, "INBOX")
			if err != nil {
				t.Fatal(err)
			}

			// Offline: a COPY of INBOX's UID 1 into INBOX, queued and
			// shown at INBOX's UIDNEXT, which the log then gives to a
			// delivery.
			a.src.set(true)
			deadline := time.Now().Add(30 * time.Second)
			for a.sync.Status().LastError == "" {
				if time.Now().After(deadline) {
					t.Fatal("the device never noticed the spool was down")
				}
				time.Sleep(10 * time.Millisecond)
			}
			ids, err := a.store.MessageIDs(ctx, inbox.ID, []mailstore.UID{1})
			if err != nil || len(ids) != 1 {
				t.Fatalf("INBOX's UID 1: %v, %v", ids, err)
			}
			outs, err := a.sync.Submit(ctx, &command.Command{Kind: command.Copy, Mailbox: inbox.Name, MailboxID: inbox.ID, IDs: []command.ID{ids[1]}})
			if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
				t.Fatalf("COPY queued offline: %+v, %v", outs, err)
			}
			delivered := r.Deliver(another("plain"))

			// The session's submit brings the spool back and waits for
			// the take-back before it goes on: after the session read
			// INBOX, before its change is applied.
			renumbered := make(chan error, 1)
			var armed atomic.Bool
			armed.Store(true)
			a.sub.set(false, func(cmds []*command.Command) {
				if len(cmds) != 1 || cmds[0].Kind != kind || !armed.CompareAndSwap(true, false) {
					return
				}
				renumbered <- newValidity(a, inbox, delivered)
			})

			var uv uint32
			var uid imap.UID
			switch kind {
			case command.Append:
				ac := c.Append("INBOX", int64(len(body)), nil)
				if _, err := ac.Write(body); err != nil {
					t.Fatal(err)
				}
				if err := ac.Close(); err != nil {
					t.Fatal(err)
				}
				data, err := ac.Wait()
				if err != nil {
					t.Fatalf("APPEND: %v", err)
				}
				uv, uid = data.UIDValidity, data.UID
			case command.Copy:
				data, err := c.Copy(imap.SeqSetNum(1), "INBOX").Wait()
				if err != nil {
					t.Fatalf("COPY: %v", err)
				}
				uv, uid = data.UIDValidity, onlyUID(t, data.DestUIDs)
			case command.Move:
				data, err := c.Move(imap.SeqSetNum(1), "INBOX").Wait()
				if err != nil {
					t.Fatalf("MOVE: %v", err)
				}
				dst, _ := data.DestUIDs.(imap.UIDSet)
				uv, uid = data.UIDValidity, onlyUID(t, dst)
			}
			select {
			case err := <-renumbered:
				if err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("the %s was answered without being submitted", kind)
			}

			now, err := a.store.MailboxByName(ctx, "INBOX")
			if err != nil {
				t.Fatal(err)
			}
			if uv != now.UIDValidity {
				t.Errorf("%s answered UIDVALIDITY %d UID %d; INBOX has UIDVALIDITY %d (was %d when the session read it)",
					kind, uv, uid, now.UIDValidity, inbox.UIDValidity)
			}
			found, err := rawAt(ctx, a.store, inbox.ID, uid)
			if err != nil || string(found) != string(body) {
				t.Errorf("INBOX's UID %d holds %q (%v), want the message the %s placed, %q", uid, found, err, kind, body)
			}
		})
	}
}

// newValidity brings d's spool back and waits until d has applied the log
// up to delivered and sent its queue, and INBOX (read as inbox before)
// has another UIDVALIDITY: a take-back made it again.
func newValidity(d *device, inbox *mailstore.Mailbox, delivered uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.src.set(false)
	for {
		st := d.sync.Status()
		if st.Queued == 0 && st.Position > delivered {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the queue was not sent after the spool came back: position %d, %d queued (%s)", st.Position, st.Queued, st.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	now, err := d.store.MailboxByID(ctx, inbox.ID)
	if err != nil {
		return err
	}
	if now.UIDValidity == inbox.UIDValidity {
		return fmt.Errorf("INBOX kept UIDVALIDITY %d through the take-back", now.UIDValidity)
	}
	return nil
}

// onlyUID is the one UID of set.
func onlyUID(t *testing.T, set imap.UIDSet) imap.UID {
	t.Helper()
	uids, ok := set.Nums()
	if !ok || len(uids) != 1 {
		t.Fatalf("destination UIDs %v, want one", set)
	}
	return uids[0]
}

// rawAt reads the bytes of the message at uid in the mailbox id of store.
func rawAt(ctx context.Context, store *mailstore.Store, id command.ID, uid imap.UID) ([]byte, error) {
	var raw []byte
	err := store.Fetch(ctx, id, mailstore.UIDSet{{Start: mailstore.UID(uid), Stop: mailstore.UID(uid)}}, mailstore.WantRaw,
		func(m *mailstore.Message) error {
			raw = append([]byte(nil), m.Raw...)
			return nil
		})
	return raw, err
}
