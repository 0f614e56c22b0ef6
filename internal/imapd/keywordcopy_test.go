package imapd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// keywordFlags returns the keywords prefix001 to prefix<n> as flags.
func keywordFlags(prefix string, from, to int) []imap.Flag {
	var out []imap.Flag
	for i := from; i <= to; i++ {
		out = append(out, imap.Flag(fmt.Sprintf("%s%03d", prefix, i)))
	}
	return out
}

// appendWith appends a small message with flags to mailbox through c.
func appendWith(_ *testing.T, c *imapclient.Client, mailbox string, flags []imap.Flag) error {
	msg := "From: a@example.org\r\nSubject: kw\r\n\r\nx\r\n"
	ac := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: flags})
	if _, err := ac.Write([]byte(msg)); err != nil {
		ac.Close()
		return err
	}
	if err := ac.Close(); err != nil {
		return err
	}
	_, err := ac.Wait()
	return err
}

// mailboxKeywords is the keywords a SELECT of mailbox lists in FLAGS.
func mailboxKeywords(t *testing.T, c *imapclient.Client, mailbox string) []string {
	t.Helper()
	var kws []string
	for _, f := range mustSelect(t, c, mailbox).Flags {
		if isKeyword(string(f)) {
			kws = append(kws, string(f))
		}
	}
	return kws
}

func messageCount(t *testing.T, c *imapclient.Client, mailbox string) uint32 {
	t.Helper()
	data, err := c.Status(mailbox, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatalf("STATUS %s: %v", mailbox, err)
	}
	return *data.NumMessages
}

// TestKeywordsBoundedCopy: COPY and MOVE (and their UID forms) carry
// their messages' keywords into the target, so one whose keywords would
// bring the target's beyond maxKeywords gets NO [LIMIT] and copies
// nothing, even when each source is within the bound. They were taken
// whole: COPYs from several mailboxes of 255 keywords each brought the
// target to any number, past the bound STORE and APPEND keep.
func TestKeywordsBoundedCopy(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	c := d.client(nil)
	for _, name := range []string{"Target", "A", "B", "C"} {
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatalf("CREATE %s: %v", name, err)
		}
	}
	// A: one message with 255 keywords; B: one with 255 others and one
	// without any; C: one with keywords the target has after A's copy.
	if err := appendWith(t, c, "A", keywordFlags("a", 1, 255)); err != nil {
		t.Fatalf("APPEND A: %v", err)
	}
	if err := appendWith(t, c, "B", keywordFlags("b", 1, 255)); err != nil {
		t.Fatalf("APPEND B: %v", err)
	}
	if err := appendWith(t, c, "B", []imap.Flag{imap.FlagSeen}); err != nil {
		t.Fatalf("APPEND B: %v", err)
	}
	if err := appendWith(t, c, "C", append(keywordFlags("A", 1, 10), imap.FlagFlagged)); err != nil {
		t.Fatalf("APPEND C: %v", err)
	}

	mustSelect(t, c, "A")
	if _, err := c.Copy(imap.SeqSetNum(1), "Target").Wait(); err != nil {
		t.Fatalf("COPY of 255 keywords into an empty mailbox: %v", err)
	}
	mustSelect(t, c, "B")
	var uids imap.UIDSet
	uids.AddRange(1, 2)
	for _, cmd := range []struct {
		name string
		run  func() error
	}{
		{"COPY 1:2", func() error { _, err := c.Copy(imap.SeqSetNum(1, 2), "Target").Wait(); return err }},
		{"UID COPY 1:2", func() error { _, err := c.Copy(uids, "Target").Wait(); return err }},
		{"MOVE 1:2", func() error { _, err := c.Move(imap.SeqSetNum(1, 2), "Target").Wait(); return err }},
		{"UID MOVE 1", func() error { _, err := c.Move(imap.UIDSetNum(1), "Target").Wait(); return err }},
	} {
		err := cmd.run()
		if imapCode(err) != imap.ResponseCodeLimit {
			t.Errorf("%s of 255 new keywords into a mailbox of 255: got %v, want NO [LIMIT]", cmd.name, err)
		}
	}
	if n := messageCount(t, c, "Target"); n != 1 {
		t.Errorf("Target has %d messages after the refused copies, want 1", n)
	}
	if n := messageCount(t, c, "B"); n != 2 {
		t.Errorf("B has %d messages after the refused moves, want 2", n)
	}
	// The message without keywords, and one whose keywords are in use in
	// the target (spelled otherwise), go.
	if _, err := c.Move(imap.UIDSetNum(2), "Target").Wait(); err != nil {
		t.Errorf("UID MOVE of a message without keywords: %v", err)
	}
	mustSelect(t, c, "C")
	if _, err := c.Copy(imap.SeqSetNum(1), "Target").Wait(); err != nil {
		t.Errorf("COPY of keywords in use in the target: %v", err)
	}
	kws := mailboxKeywords(t, c, "Target")
	if len(kws) != 255 || slices.ContainsFunc(kws, func(k string) bool { return strings.HasPrefix(k, "b") }) {
		t.Errorf("Target has %d keywords, want A's 255 alone", len(kws))
	}
	if n := messageCount(t, c, "Target"); n != 3 {
		t.Errorf("Target has %d messages, want 3", n)
	}
}

// TestKeywordsBoundedReset: the view's keywords only grow while the
// mailbox is selected, include keywords that left their last message
// since and leave out those the session set quietly, so they do not tell
// which keywords are in use: a STORE of keywords the view knows but that
// are not in use any more is checked against those in use. Clearing 256 keywords, setting 256 others and
// setting the first 256 again brought the mailbox to 512, and each round
// to 256 more.
func TestKeywordsBoundedReset(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	store := func(seq uint32, op imap.StoreFlagsOp, flags []imap.Flag) error {
		return c.Store(imap.SeqSetNum(seq), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close()
	}
	k, n := keywordFlags("k", 1, 256), keywordFlags("n", 1, 256)
	if err := store(1, imap.StoreFlagsAdd, k); err != nil {
		t.Fatal(err)
	}
	// Selected again, the view has k001:k256.
	mustSelect(t, c, "INBOX")
	for _, step := range []struct {
		name string
		err  error
	}{
		{"STORE 1 -FLAGS k001:k256", store(1, imap.StoreFlagsDel, k)},
		{"STORE 2 +FLAGS n001:n256", store(2, imap.StoreFlagsAdd, n)},
	} {
		if step.err != nil {
			t.Fatalf("%s: %v", step.name, step.err)
		}
	}
	for _, step := range []struct {
		name string
		err  error
	}{
		{"STORE 3 +FLAGS k001:k256", store(3, imap.StoreFlagsAdd, k)},
		{"STORE 3 +FLAGS k001", store(3, imap.StoreFlagsAdd, k[:1])},
		{"STORE 3 FLAGS (\\Seen k001)", store(3, imap.StoreFlagsSet, []imap.Flag{imap.FlagSeen, k[0]})},
	} {
		if imapCode(step.err) != imap.ResponseCodeLimit {
			t.Errorf("%s with n001:n256 in use: got %v, want NO [LIMIT]", step.name, step.err)
		}
	}
	// Keywords in use are taken, and one more once one has left.
	if err := store(3, imap.StoreFlagsAdd, append(n[:10:10], imap.FlagFlagged)); err != nil {
		t.Errorf("STORE of keywords in use: %v", err)
	}
	if err := store(2, imap.StoreFlagsDel, n[255:]); err != nil {
		t.Fatal(err)
	}
	if err := store(4, imap.StoreFlagsAdd, k[:1]); err != nil {
		t.Errorf("STORE of one keyword into a mailbox of 255: %v", err)
	}
	if kws := mailboxKeywords(t, c, "INBOX"); len(kws) != 256 {
		t.Errorf("INBOX has %d keywords, want 256", len(kws))
	}
}

// TestPermanentFlagsAtBound: PERMANENTFLAGS has \* (new keywords may be
// created, RFC 3501 section 7.1) only while the mailbox has fewer than
// maxKeywords keywords, at SELECT and when a FETCH writes FLAGS and
// PERMANENTFLAGS itself. It was offered at the bound too, where every new
// keyword gets NO [LIMIT].
func TestPermanentFlagsAtBound(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	var mu sync.Mutex
	var told [][]imap.Flag
	c := d.client(&imapclient.UnilateralDataHandler{
		Mailbox: func(m *imapclient.UnilateralDataMailbox) {
			if m.PermanentFlags != nil {
				mu.Lock()
				told = append(told, m.PermanentFlags)
				mu.Unlock()
			}
		},
	})
	store := func(seq uint32, op imap.StoreFlagsOp, flags []imap.Flag) {
		t.Helper()
		if err := c.Store(imap.SeqSetNum(seq), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	wildcard := func(perm []imap.Flag) bool { return slices.Contains(perm, imap.FlagWildcard) }
	k := keywordFlags("k", 1, 256)
	mustSelect(t, c, "INBOX")
	store(1, imap.StoreFlagsAdd, k[:255])
	if perm := mustSelect(t, c, "INBOX").PermanentFlags; !wildcard(perm) || len(perm) != 5+255+1 {
		t.Errorf("SELECT with 255 keywords: PERMANENTFLAGS has %d flags, \\* %v; want 261 with \\*", len(perm), wildcard(perm))
	}
	// The session sets the 256th quietly; the FETCH that shows it writes
	// FLAGS and PERMANENTFLAGS first.
	store(2, imap.StoreFlagsAdd, k[255:])
	if _, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{Flags: true}).Collect(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(told)
	mu.Unlock()
	if len(got) == 0 {
		t.Errorf("FETCH 2 (FLAGS) showing a new keyword: no PERMANENTFLAGS")
	} else if perm := got[len(got)-1]; wildcard(perm) || len(perm) != 5+256 {
		t.Errorf("FETCH 2 (FLAGS) at 256 keywords: PERMANENTFLAGS has %d flags, \\* %v; want 261 without \\*", len(perm), wildcard(perm))
	}
	if perm := mustSelect(t, c, "INBOX").PermanentFlags; wildcard(perm) || len(perm) != 5+256 {
		t.Errorf("SELECT with 256 keywords: PERMANENTFLAGS has %d flags, \\* %v; want 261 without \\*", len(perm), wildcard(perm))
	}
	if data, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil || len(data.PermanentFlags) != 0 {
		t.Fatalf("EXAMINE: %v, PERMANENTFLAGS %d flags, want none", err, len(data.PermanentFlags))
	}
	mustSelect(t, c, "INBOX")
	store(2, imap.StoreFlagsDel, k[255:])
	if perm := mustSelect(t, c, "INBOX").PermanentFlags; !wildcard(perm) {
		t.Errorf("SELECT with 255 keywords again: PERMANENTFLAGS without \\*")
	}
}

// TestKeywordsPastBoundFromTheLog: another device's daemon (an older or a
// modified one) may write entries that bring a mailbox past maxKeywords.
// This device applies them whole (the log is the truth): a session sees
// every keyword, gets no \* in PERMANENTFLAGS, may set keywords in use and
// clear any, and gets NO [LIMIT] for a new keyword there and for a COPY
// that would carry the excess into another mailbox.
func TestKeywordsPastBoundFromTheLog(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	deliverAll(r, a)
	b := r.device("b")
	b.synced(r.Head())
	ctx := context.Background()
	inbox, err := b.store.MailboxIdentity(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := b.store.Selected(inbox.ID, inbox.UIDValidity).MessageIDs(ctx, []mailstore.UID{1, 2})
	if err != nil || len(ids) != 2 {
		t.Fatalf("message ids: %v, %v", ids, err)
	}
	var kws []string
	for _, f := range keywordFlags("x", 1, 300) {
		kws = append(kws, string(f))
	}
	if _, err := b.sync.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: kws, IDs: []command.ID{ids[1], ids[2]}}); err != nil {
		t.Fatal(err)
	}
	a.synced(r.Head())
	c := a.client(nil)
	if err := c.Create("Other", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	sel := mustSelect(t, c, "INBOX")
	if len(sel.Flags) != 5+300 || slices.Contains(sel.PermanentFlags, imap.FlagWildcard) {
		t.Errorf("SELECT of 300 keywords: FLAGS has %d flags, PERMANENTFLAGS \\* %v; want 305 and no \\*",
			len(sel.Flags), slices.Contains(sel.PermanentFlags, imap.FlagWildcard))
	}
	store := func(seq uint32, op imap.StoreFlagsOp, flags ...imap.Flag) error {
		return c.Store(imap.SeqSetNum(seq), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close()
	}
	if err := store(3, imap.StoreFlagsAdd, "x001", "X300", imap.FlagSeen); err != nil {
		t.Errorf("STORE of keywords in use past the bound: %v", err)
	}
	if err := store(3, imap.StoreFlagsAdd, "new"); imapCode(err) != imap.ResponseCodeLimit {
		t.Errorf("STORE of a new keyword past the bound: got %v, want NO [LIMIT]", err)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Other").Wait(); imapCode(err) != imap.ResponseCodeLimit {
		t.Errorf("COPY of 300 keywords: got %v, want NO [LIMIT]", err)
	}
	if err := store(2, imap.StoreFlagsDel, keywordFlags("x", 1, 300)...); err != nil {
		t.Errorf("STORE -FLAGS past the bound: %v", err)
	}
	if _, err := c.Copy(imap.SeqSetNum(2), "Other").Wait(); err != nil {
		t.Errorf("COPY of a message without keywords: %v", err)
	}
	if n := messageCount(t, c, "Other"); n != 1 {
		t.Errorf("Other has %d messages, want 1", n)
	}
}

// TestKeywordsBoundedConcurrent: two sessions appending a new keyword each
// to a mailbox of 255 at the same moment: one is taken, the other gets NO
// [LIMIT]. Both passed the check before either was applied, and the
// mailbox had 257. The submit of the first waits (at most 3 s) for the
// second to come, as the second did on the code before; now the second
// waits for the first to be applied before its check.
func TestKeywordsBoundedConcurrent(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	c1, c2 := d.client(nil), d.client(nil)
	if err := c1.Create("Box", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := appendWith(t, c1, "Box", keywordFlags("k", 1, 255)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	came := 0
	both := make(chan struct{})
	d.sub.set(false, func(cmds []*command.Command) {
		if cmds[0].Kind != command.Append {
			return
		}
		mu.Lock()
		came++
		if came == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
		case <-time.After(3 * time.Second):
		}
	})
	errs := make(chan error, 2)
	for i, c := range []*imapclient.Client{c1, c2} {
		go func() { errs <- appendWith(t, c, "Box", []imap.Flag{imap.Flag(fmt.Sprintf("new%d", i))}) }()
	}
	var taken, limited int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			taken++
		case imapCode(err) == imap.ResponseCodeLimit:
			limited++
		default:
			t.Errorf("APPEND: %v", err)
		}
	}
	d.sub.set(false, nil)
	if taken != 1 || limited != 1 {
		t.Errorf("two APPENDs of a new keyword each into a mailbox of 255 at once: %d taken, %d NO [LIMIT]; want 1 and 1", taken, limited)
	}
	if kws := mailboxKeywords(t, c1, "Box"); len(kws) != 256 {
		t.Errorf("Box has %d keywords, want 256", len(kws))
	}
}
