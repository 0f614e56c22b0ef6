package imapd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/mailstore"
)

// deletedAndArchive is a restoreWindow's before: "restored 0" (UID 1)
// flagged \Deleted, and a mailbox Archive.
func deletedAndArchive(t *testing.T) func(a *devicetest.Device) {
	return func(a *devicetest.Device) {
		flagFirst(t, `\Deleted`)(a)
		if _, err := a.Sync.Submit(context.Background(), &command.Command{Kind: command.CreateMailbox, Mailbox: "Archive"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWindowCommands: each command a session that had INBOX selected
// before a restore's commit gave it a new UIDVALIDITY (restoreWindow) may
// send by its old UIDs, as the first one after the commit and before the
// server hears it, must leave "restored 0" (UID 1 in the store now, the
// appended message's UID for the session) as it was, show nothing of it,
// and put nothing in Archive. Each answers NO [NONEXISTENT] but CLOSE,
// which leaves the mailbox with OK. On the code before, each read or
// changed "restored 0": FETCH BODY[] showed it and set \Seen, FETCH
// RFC822.SIZE gave its size, SEARCH TEXT found it, COPY and MOVE put it
// in Archive, UID EXPUNGE and CLOSE expunged it; and a STATUS SIZE of
// another session put its size in the listing the session is shown, under
// the appended message's UID.
func TestWindowCommands(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// send sends the command on held[0] (held[1] too for those that
		// need a second session) and returns the wait for its answer.
		send   func(held []*imapclient.Client) func() windowResult
		wantOK bool // CLOSE
	}{
		{"UID FETCH BODY[]", func(h []*imapclient.Client) func() windowResult {
			cmd := h[0].Fetch(imap.UIDSetNum(1), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{}}})
			return func() windowResult {
				msgs, err := cmd.Collect()
				var b strings.Builder
				for _, m := range msgs {
					for _, s := range m.BodySection {
						b.Write(s.Bytes)
					}
				}
				return windowResult{err, b.String()}
			}
		}, false},
		{"FETCH RFC822.SIZE", func(h []*imapclient.Client) func() windowResult {
			cmd := h[0].Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, RFC822Size: true})
			return func() windowResult { return sizes(cmd.Collect()) }
		}, false},
		{"STATUS SIZE in another session, then FETCH RFC822.SIZE", func(h []*imapclient.Client) func() windowResult {
			if _, err := h[1].Status("INBOX", &imap.StatusOptions{Size: true}).Wait(); err != nil {
				return func() windowResult { return windowResult{err: err} }
			}
			cmd := h[0].Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, RFC822Size: true})
			return func() windowResult { return sizes(cmd.Collect()) }
		}, false},
		{"UID SEARCH TEXT", func(h []*imapclient.Client) func() windowResult {
			cmd := h[0].UIDSearch(&imap.SearchCriteria{Text: []string{"restored"}}, nil)
			return func() windowResult {
				data, err := cmd.Wait()
				if err != nil {
					return windowResult{err: err}
				}
				return windowResult{show: fmt.Sprint(data.AllUIDs())}
			}
		}, false},
		{"UID COPY", func(h []*imapclient.Client) func() windowResult {
			cmd := h[0].Copy(imap.UIDSetNum(1), "Archive")
			return func() windowResult { _, err := cmd.Wait(); return windowResult{err: err} }
		}, false},
		{"UID MOVE", func(h []*imapclient.Client) func() windowResult {
			cmd := h[0].Move(imap.UIDSetNum(1), "Archive")
			return func() windowResult { _, err := cmd.Wait(); return windowResult{err: err} }
		}, false},
		{"UID EXPUNGE", func(h []*imapclient.Client) func() windowResult {
			cmd := h[0].UIDExpunge(imap.UIDSetNum(1))
			return func() windowResult { return windowResult{err: cmd.Close()} }
		}, false},
		{"CLOSE", func(h []*imapclient.Client) func() windowResult {
			cmd := h[0].UnselectAndExpunge()
			return func() windowResult { return windowResult{err: cmd.Wait()} }
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const restored = 10
			w := newRestoreWindow(t, ctx, restored, 2, deletedAndArchive(t))
			done := make(chan error, 1)
			var got windowResult
			wait := tc.send(w.held)
			go func() { got = wait(); done <- got.err }()
			_, submitted := answered(t, ctx, w, done)
			w.release()
			<-w.heard
			if submitted {
				<-done
				t.Errorf("the command was submitted (answered %v)", got.err)
			}
			if strings.Contains(got.show, "restored") || got.show == "[1]" {
				t.Errorf("the answer shows %q of the store's UID 1, \"restored 0\"", got.show)
			}
			switch code := imapCode(got.err); {
			case tc.wantOK && got.err != nil:
				t.Errorf("answered %v, want OK", got.err)
			case !tc.wantOK && code != imap.ResponseCodeNonExistent:
				t.Errorf("answered %v, want NO [NONEXISTENT]", got.err)
			}
			stored := storedInbox(t, w.d)
			if got, want := stored["restored 0"], `UID 1 [\Deleted]`; got != want {
				t.Errorf(`"restored 0" in the store: %q, want %q`, got, want)
			}
			if len(stored) != restored+1 {
				t.Errorf("the store's INBOX holds %d messages, want %d", len(stored), restored+1)
			}
			if n := len(devicetest.Messages(t, w.d.store, "Archive")); n != 0 {
				t.Errorf("Archive holds %d messages, want none", n)
			}
		})
	}
}

// windowResult is a command's answer: its error, and what it showed of
// the messages.
type windowResult struct {
	err  error
	show string
}

// sizes is what a FETCH of RFC822.SIZE showed: "restored" where a size
// is not the appended message's.
func sizes(msgs []*imapclient.FetchMessageBuffer, err error) windowResult {
	out := windowResult{err: err}
	appended := int64(len("From: a@example.org\r\nSubject: " + appendedSubject + "\r\n\r\nx\r\n"))
	for _, m := range msgs {
		if m.RFC822Size != appended {
			out.show = "the size of a restored message"
		}
	}
	return out
}

// TestWindowIdleAndSelect: of two sessions that had INBOX selected before
// a restore's commit gave it a new UIDVALIDITY (restoreWindow), one
// idles; the other's UID FETCH by the old UID, before the server hears
// the commit, is refused, and the idling one is told at once that the
// mailbox is gone (its message expunged), not only once the server hears
// the commit; after DONE its commands are refused too. A session that
// selects INBOX meanwhile is shown the store's INBOX, and still is once
// the server hears the commit, which it must not apply to it again. On
// the code before, the FETCH showed "restored 0" and the idling session
// heard nothing until the server heard the commit.
func TestWindowIdleAndSelect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const restored = 10
	w := newRestoreWindow(t, ctx, restored, 2, nil)
	idler := w.held[1]
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := w.held[0].Fetch(imap.UIDSetNum(1), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{subjectSection}}).Collect()
	for uid, subj := range subjects(msgs) {
		if subj != appendedSubject {
			t.Errorf("UID FETCH 1 in the INBOX selected before the commit shows UID %d %q", uid, subj)
		}
	}
	if imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("UID FETCH 1 in the INBOX selected before the commit: %v, want NO [NONEXISTENT]", err)
	}
	select {
	case seq := <-w.expunged[1]:
		if seq != 1 {
			t.Errorf("the idling session was told EXPUNGE %d, want 1", seq)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the idling session was not told the mailbox is gone within 10 s of the refused FETCH, before the server heard the commit")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	storeCmd := idler.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil)
	storeDone := make(chan error, 1)
	go func() { storeDone <- storeCmd.Close() }()
	err, submitted := answered(t, ctx, w, storeDone)
	if submitted {
		t.Errorf("UID STORE 1 after IDLE in the INBOX selected before the commit was submitted")
	} else if imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("UID STORE 1 after IDLE in the INBOX selected before the commit: %v, want NO [NONEXISTENT]", err)
	}

	c := w.d.client(nil)
	want := storeListing(t, w.d, mailstore.InboxID())
	if sel := mustSelect(t, c, "INBOX"); sel.UIDValidity == w.uidValidity || sel.NumMessages != restored+1 {
		t.Errorf("SELECT INBOX after the refused FETCH: UIDVALIDITY %d (before: %d), EXISTS %d; want a new UIDVALIDITY and %d",
			sel.UIDValidity, w.uidValidity, sel.NumMessages, restored+1)
	}
	w.release()
	<-w.heard
	if submitted {
		<-storeDone
	}
	if got := fetchListing(t, c); !slices.Equal(got, want) {
		t.Errorf("FETCH in the INBOX selected in the window, once the server heard the commit, answers\n%s\nthe store holds\n%s",
			strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if stored := storedInbox(t, w.d); stored["restored 0"] != "UID 1 []" {
		t.Errorf(`"restored 0" in the store: %q, want "UID 1 []"`, stored["restored 0"])
	}
}
