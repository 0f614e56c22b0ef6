package imapd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
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
