package imapd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/mailstore"
)

// flagFirst returns a restoreWindow's before: it sets flags on
// "restored 0" (UID 1) on the device that writes the checkpoint.
func flagFirst(t *testing.T, flags ...string) func(a *devicetest.Device) {
	return func(a *devicetest.Device) {
		ctx := context.Background()
		ids, err := a.Store.MessageIDs(ctx, mailstore.InboxID(), []mailstore.UID{1})
		if err != nil || len(ids) != 1 {
			t.Fatalf("the id of UID 1: %v, %v", ids, err)
		}
		if _, err := a.Sync.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: flags, IDs: []command.ID{ids[1]}}); err != nil {
			t.Fatal(err)
		}
	}
}

// subjectSection asks for the Subject field, without setting \Seen.
var subjectSection = &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Peek: true}

// subjects returns the subject of each message fetched with
// subjectSection, by UID.
func subjects(msgs []*imapclient.FetchMessageBuffer) map[imap.UID]string {
	out := map[imap.UID]string{}
	for _, m := range msgs {
		h := string(m.FindBodySection(subjectSection))
		out[m.UID] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(h), "Subject:"))
	}
	return out
}

// storedInbox returns the store's INBOX as "UID subject flags" lines.
func storedInbox(t *testing.T, d *device) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range devicetest.Messages(t, d.store, "INBOX") {
		out[m.Envelope.Subject] = fmt.Sprintf("UID %d %v", m.UID, m.Flags)
	}
	return out
}

// answered waits for a command's answer, or for the server to submit a
// command for it (which waits for the commit to be heard), and reports
// which came first.
func answered(t *testing.T, ctx context.Context, w *restoreWindow, done <-chan error) (err error, submitted bool) {
	t.Helper()
	select {
	case err := <-done:
		return err, false
	case <-w.submitted:
		return nil, true
	case <-ctx.Done():
		t.Fatal("neither an answer nor a submitted command")
	}
	return nil, false
}

// TestSelectedBeforeRestoreTold: sessions that had INBOX selected before
// a restore's commit gave it a new UIDVALIDITY (restoreWindow) send
// commands by the old UIDs before the server hears the commit. UID 1 was
// the appended message for them and is "restored 0" (flagged \Deleted)
// in the store now. FETCH, SEARCH, STORE and EXPUNGE must not read or
// change "restored 0" through it: each gets NO [NONEXISTENT] (the
// selected mailbox is gone for them, as the server hearing the commit
// tells them), and selecting INBOX again shows the new UIDVALIDITY. They
// showed "restored 0" as UID 1, found it by SEARCH, and flagged and
// expunged it, a message the client never saw.
func TestSelectedBeforeRestoreTold(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const restored = 20
	w := newRestoreWindow(t, ctx, restored, 4, flagFirst(t, `\Deleted`))
	fetchC, searchC, storeC, expungeC := w.held[0], w.held[1], w.held[2], w.held[3]

	msgs, err := fetchC.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{subjectSection}}).Collect()
	for uid, subj := range subjects(msgs) {
		if subj != appendedSubject {
			t.Errorf("UID FETCH 1 in the INBOX selected before the commit shows UID %d %q; UID 1 was %q there", uid, subj, appendedSubject)
		}
	}
	if imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("UID FETCH 1 in the INBOX selected before the commit: %v, want NO [NONEXISTENT]", err)
	}

	hits, err := searchC.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "restored"}}}, nil).Wait()
	if err == nil && len(hits.AllUIDs()) > 0 {
		t.Errorf("UID SEARCH SUBJECT restored in the INBOX selected before the commit finds %v; it showed only %q", hits.AllUIDs(), appendedSubject)
	}
	if imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("UID SEARCH in the INBOX selected before the commit: %v, want NO [NONEXISTENT]", err)
	}

	// STORE and EXPUNGE: on the old code each submits its change, which
	// waits for the commit to be heard; the commit is let through once
	// both are answered or submitted.
	storeDone, expungeDone := make(chan error, 1), make(chan error, 1)
	storeCmd := storeC.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil)
	go func() { storeDone <- storeCmd.Close() }()
	storeErr, storeSubmitted := answered(t, ctx, w, storeDone)
	expungeCmd := expungeC.Expunge()
	go func() { expungeDone <- expungeCmd.Close() }()
	expungeErr, expungeSubmitted := answered(t, ctx, w, expungeDone)
	w.release()
	<-w.heard
	if storeSubmitted {
		storeErr = <-storeDone
		t.Errorf("UID STORE 1 in the INBOX selected before the commit was submitted (answered %v)", storeErr)
	}
	if expungeSubmitted {
		expungeErr = <-expungeDone
		t.Errorf("EXPUNGE in the INBOX selected before the commit was submitted (answered %v)", expungeErr)
	}
	if imapCode(storeErr) != imap.ResponseCodeNonExistent {
		t.Errorf("UID STORE 1 in the INBOX selected before the commit: %v, want NO [NONEXISTENT]", storeErr)
	}
	if imapCode(expungeErr) != imap.ResponseCodeNonExistent {
		t.Errorf("EXPUNGE in the INBOX selected before the commit: %v, want NO [NONEXISTENT]", expungeErr)
	}
	stored := storedInbox(t, w.d)
	if got, want := stored["restored 0"], `UID 1 [\Deleted]`; got != want {
		t.Errorf(`"restored 0" in the store after STORE and EXPUNGE of UID 1 in the INBOX selected before the commit: %q, want %q`, got, want)
	}
	if len(stored) != restored+1 {
		t.Errorf("the store's INBOX holds %d messages, want %d", len(stored), restored+1)
	}

	// Selected again, INBOX is the store's.
	sel := mustSelect(t, storeC, "INBOX")
	if sel.UIDValidity == w.uidValidity || sel.NumMessages != restored+1 {
		t.Errorf("INBOX selected again: UIDVALIDITY %d (before: %d), EXISTS %d; want a new UIDVALIDITY and %d", sel.UIDValidity, w.uidValidity, sel.NumMessages, restored+1)
	}
}
