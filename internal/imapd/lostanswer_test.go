package imapd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// errAnswerLost is what the device hears of an append whose answer was
// lost on the way back (the connection was cut): temporary.
var errAnswerLost = fmt.Errorf("reading the spool's answer: read tcp: connection reset by peer: %w", spool.ErrUnavailable)

// TestLostAnswerApplied loses the spool's answer to the append of an
// APPEND, COPY or MOVE that landed, after the sync loop read and applied
// the entry: the submit, queueing it under its ids, finds it applied
// already (syncer/queue.go). The client must get OK with APPENDUID or
// COPYUID naming where the message is, and the mailbox must hold it once.
// Before, the outcome carried no placement: APPEND answered with an error
// ("append applied without placing the message") and COPY and MOVE NO
// ("expunged by another device"), for changes that were made, so a client
// sent them again and the user got the message twice.
func TestLostAnswerApplied(t *testing.T) {
	t.Parallel()
	for _, kind := range []command.Kind{command.Append, command.Copy, command.Move} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			a := r.device("a")
			ctx := context.Background()
			c := a.client(nil)
			body := []byte(fmt.Sprintf("From: a@example.org\r\nSubject: %s whose answer was lost\r\n\r\nbody\r\n", kind))
			appendTo := func(name string) (*imap.AppendData, error) {
				ac := c.Append(name, int64(len(body)), nil)
				if _, err := ac.Write(body); err != nil {
					t.Fatal(err)
				}
				if err := ac.Close(); err != nil {
					t.Fatal(err)
				}
				return ac.Wait()
			}
			if kind != command.Append {
				if err := c.Create("Src", nil).Wait(); err != nil {
					t.Fatalf("CREATE Src: %v", err)
				}
				if _, err := appendTo("Src"); err != nil {
					t.Fatalf("APPEND to Src: %v", err)
				}
				mustSelect(t, c, "Src")
			}

			// The next append lands; its answer is lost only once the
			// loop has applied it.
			lost := make(chan error, 1)
			a.src.setLose(func(first uint64, n int) error {
				wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := a.sync.WaitApplied(wctx, first+uint64(n)-1); err != nil {
					lost <- fmt.Errorf("the loop did not apply positions %d to %d: %w", first, first+uint64(n)-1, err)
				} else {
					lost <- nil
				}
				return errAnswerLost
			})

			var uv uint32
			var uid imap.UID
			var err error
			switch kind {
			case command.Append:
				var data *imap.AppendData
				if data, err = appendTo("INBOX"); err == nil {
					uv, uid = data.UIDValidity, data.UID
				}
			case command.Copy:
				var data *imap.CopyData
				if data, err = c.Copy(imap.SeqSetNum(1), "INBOX").Wait(); err == nil {
					uv, uid = data.UIDValidity, onlyUID(t, data.DestUIDs)
				}
			case command.Move:
				var data *imapclient.MoveData
				if data, err = c.Move(imap.SeqSetNum(1), "INBOX").Wait(); err == nil {
					dst, _ := data.DestUIDs.(imap.UIDSet)
					uv, uid = data.UIDValidity, onlyUID(t, dst)
				}
			}
			select {
			case lerr := <-lost:
				if lerr != nil {
					t.Fatal(lerr)
				}
			default:
				t.Fatalf("the %s was answered (%v) without its append's answer being lost", kind, err)
			}
			if err != nil {
				t.Fatalf("%s whose answer was lost after the loop applied it: %v; want OK with the %s", kind, err,
					map[bool]string{true: "APPENDUID", false: "COPYUID"}[kind == command.Append])
			}

			// Nothing was queued to be sent again.
			a.synced(r.Head())
			if st := a.sync.Status(); st.Queued != 0 {
				t.Errorf("%d changes queued after the %s; want none", st.Queued, kind)
			}
			inbox, err := a.store.MailboxByName(ctx, "INBOX")
			if err != nil {
				t.Fatal(err)
			}
			if uv != inbox.UIDValidity || inbox.Messages != 1 {
				t.Errorf("%s answered UIDVALIDITY %d UID %d; INBOX has UIDVALIDITY %d and %d messages, want the same UIDVALIDITY and 1 message",
					kind, uv, uid, inbox.UIDValidity, inbox.Messages)
			}
			found, err := rawAt(ctx, a.store, inbox.ID, uid)
			if err != nil || string(found) != string(body) {
				t.Errorf("INBOX's UID %d holds %q (%v), want the message the %s placed, %q", uid, found, err, kind, body)
			}
			if kind != command.Append {
				src, err := a.store.MailboxByName(ctx, "Src")
				if err != nil {
					t.Fatal(err)
				}
				want := uint32(1)
				if kind == command.Move {
					want = 0
				}
				if src.Messages != want {
					t.Errorf("Src holds %d messages after the %s, want %d", src.Messages, kind, want)
				}
			}
		})
	}
}

// TestLostAnswerRejected loses the spool's answer to the append of a
// CREATE or RENAME after the sync loop read the entry, which the log
// rejected: another device created the same name, or deleted the mailbox
// to rename, first. The submit, queueing it under its id, finds it seen
// (syncer/queue.go), and the client must hear the rejection it would have
// heard without the loss, read from the store's record of it. Before, the
// store's seen ids, which count rejected entries too, made the outcome
// Applied: OK for a mailbox that was not created or renamed.
func TestLostAnswerRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup string // a's command before; "" for none
		other string // b's command, which lands first
		cmd   func(c *imapclient.Client) error
		code  imap.ResponseCode
		// exists says which mailboxes a must hold (true) or not after.
		exists map[string]bool
	}{
		{name: "Create", other: "Dst",
			cmd:    func(c *imapclient.Client) error { return c.Create("Dst", nil).Wait() },
			code:   imap.ResponseCodeAlreadyExists,
			exists: map[string]bool{"Dst": true}},
		{name: "Rename", setup: "Src", other: "Src",
			cmd:    func(c *imapclient.Client) error { return c.Rename("Src", "Dst", nil).Wait() },
			code:   imap.ResponseCodeNonExistent,
			exists: map[string]bool{"Src": false, "Dst": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			a, b := r.device("a"), r.device("b")
			ctx := context.Background()
			ac, bc := a.client(nil), b.client(nil)
			if tc.setup != "" {
				if err := ac.Create(tc.setup, nil).Wait(); err != nil {
					t.Fatalf("CREATE %s: %v", tc.setup, err)
				}
			}
			b.synced(r.Head())

			// b's command, answered once b applied it (so it is in the
			// log), runs as a submits its own; a's lands after it.
			other := make(chan error, 1)
			a.sub.set(false, func([]*command.Command) {
				a.sub.set(false, nil)
				if tc.setup == "" {
					other <- bc.Create(tc.other, nil).Wait()
				} else {
					other <- bc.Delete(tc.other).Wait()
				}
			})
			lost := make(chan error, 1)
			a.src.setLose(func(first uint64, n int) error {
				wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := a.sync.WaitApplied(wctx, first+uint64(n)-1); err != nil {
					lost <- fmt.Errorf("the loop did not apply positions %d to %d: %w", first, first+uint64(n)-1, err)
				} else {
					lost <- nil
				}
				return errAnswerLost
			})

			err := tc.cmd(ac)
			select {
			case lerr := <-lost:
				if lerr != nil {
					t.Fatal(lerr)
				}
			default:
				t.Fatalf("the %s was answered (%v) without its append's answer being lost", tc.name, err)
			}
			select {
			case oerr := <-other:
				if oerr != nil {
					t.Fatalf("the other device's command: %v", oerr)
				}
			default:
				t.Fatalf("the %s was answered (%v) without the other device's command", tc.name, err)
			}
			var ierr *imap.Error
			if !errors.As(err, &ierr) || ierr.Type != imap.StatusResponseTypeNo || ierr.Code != tc.code {
				t.Errorf("%s the log rejected, whose answer was lost: %v; want NO [%s], as without the loss", tc.name, err, tc.code)
			}

			a.synced(r.Head())
			if st := a.sync.Status(); st.Queued != 0 {
				t.Errorf("%d changes queued after the %s; want none", st.Queued, tc.name)
			}
			for name, want := range tc.exists {
				_, err := a.store.MailboxByName(ctx, name)
				if got := err == nil; got != want || (err != nil && !errors.Is(err, mailstore.ErrNoMailbox)) {
					t.Errorf("mailbox %s after the %s: %v; want it to exist: %v", name, tc.name, err, want)
				}
			}
		})
	}
}

// TestLostAnswerGoneSince loses the spool's answer to the append of an
// APPEND into Dst after this device applied it, and another device deletes
// Dst, with the message, before the submit looks for where it is. The
// message was appended: the client must get OK, without APPENDUID (RFC
// 4315 lets a server leave it out), not an error it answers by appending
// again. Before: NO [SERVERBUG] ("append applied without placing the
// message").
func TestLostAnswerGoneSince(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b := r.device("a"), r.device("b")
	ctx := context.Background()
	ac, bc := a.client(nil), b.client(nil)
	if err := ac.Create("Dst", nil).Wait(); err != nil {
		t.Fatalf("CREATE Dst: %v", err)
	}
	b.synced(r.Head())

	// b's DELETE is answered once b applied it: it is in the log.
	lost := make(chan error, 1)
	a.src.setLose(func(first uint64, n int) error {
		wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := a.sync.WaitApplied(wctx, first+uint64(n)-1)
		if err == nil {
			// b shows the message appended, so its DELETE takes it
			// (one of a mailbox b had not seen it in leaves it).
			err = b.sync.WaitApplied(wctx, first+uint64(n)-1)
		}
		if err == nil {
			err = bc.Delete("Dst").Wait()
		}
		var head uint64
		if err == nil {
			if head, err = r.Store.Head(wctx, devicetest.User); err == nil {
				err = a.sync.WaitApplied(wctx, head)
			}
		}
		if err != nil {
			err = fmt.Errorf("applying the APPEND at %d and the other device's DELETE: %w", first, err)
		}
		lost <- err
		return errAnswerLost
	})

	body := []byte("From: a@example.org\r\nSubject: appended, then deleted with its mailbox\r\n\r\nbody\r\n")
	cmd := ac.Append("Dst", int64(len(body)), nil)
	if _, err := cmd.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	select {
	case lerr := <-lost:
		if lerr != nil {
			t.Fatal(lerr)
		}
	default:
		t.Fatalf("the APPEND was answered (%v) without its append's answer being lost", err)
	}
	if err != nil {
		t.Fatalf("APPEND applied, its message deleted since, whose answer was lost: %v; want OK", err)
	}
	if data.UID != 0 || data.UIDValidity != 0 {
		t.Errorf("APPEND answered APPENDUID %d %d for a message deleted since; want none", data.UIDValidity, data.UID)
	}
	a.synced(r.Head())
	if st := a.sync.Status(); st.Queued != 0 {
		t.Errorf("%d changes queued after the APPEND; want none", st.Queued)
	}
	if _, err := a.store.MailboxByName(ctx, "Dst"); !errors.Is(err, mailstore.ErrNoMailbox) {
		t.Errorf("Dst after the other device's DELETE: %v; want %v", err, mailstore.ErrNoMailbox)
	}
}
