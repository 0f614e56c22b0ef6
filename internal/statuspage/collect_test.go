package statuspage

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/syncer"
)

type fixedStatus syncer.Status

func (f fixedStatus) Status() syncer.Status { return syncer.Status(f) }

// storeWith opens a real store on disk with n deliveries and one rejected
// entry after them.
func storeWith(t *testing.T, n int) *mailstore.Store {
	t.Helper()
	st, err := mailstore.Open(filepath.Join(t.TempDir(), "mail.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var entries []mailstore.Entry
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf("From: a@example.org\r\nSubject: secret subject %d\r\n\r\nsecret body\r\n", i)
		var id command.ID
		sum := sha256.Sum256([]byte(body))
		copy(id[:], sum[:])
		entries = append(entries, mailstore.Entry{
			Pos: uint64(i), ID: id, Author: mailstore.AuthorSpool,
			Cmd: &command.Command{Kind: command.Deliver, Date: 1700000000000, Body: []byte(body)},
		})
	}
	ctx := context.Background()
	if _, err := st.Apply(ctx, entries, uint64(n)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := st.RecordRejected(ctx, uint64(n+1), "bad signature"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(ctx, nil, uint64(n+1)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return st
}

func TestCollector(t *testing.T) {
	t.Parallel()
	st := storeWith(t, 3)
	now := time.Now()
	c := &Collector{
		Sync:  fixedStatus{Position: 4, Head: 9, Connected: true, LastContact: now, Checkpoint: 2, Restores: 1},
		Store: st,
		IMAP:  IMAPSettings{Host: "127.0.0.1", Port: 1143, User: "alice"},
		Now:   func() time.Time { return now },
	}
	r, err := c.Report(context.Background())
	if err != nil {
		t.Fatalf("Report: %v", err)
	}
	if r.Sync.Position != 4 || r.Sync.Head != 9 || r.Sync.Lag != 5 || !r.Sync.Connected {
		t.Errorf("sync %+v, want position 4, head 9, lag 5, connected", r.Sync)
	}
	if r.Checkpoint.Position != 2 || r.Checkpoint.Restores != 1 {
		t.Errorf("checkpoint %+v, want position 2, 1 restore", r.Checkpoint)
	}
	var inbox *Mailbox
	for i := range r.Mailboxes {
		if r.Mailboxes[i].Name == "INBOX" {
			inbox = &r.Mailboxes[i]
		}
	}
	if inbox == nil || inbox.Messages != 3 || inbox.Unseen != 3 || inbox.Size == 0 {
		t.Errorf("mailboxes %+v, want INBOX with 3 unseen messages", r.Mailboxes)
	}
	if r.Rejected.Count != 1 || len(r.Rejected.Recent) != 1 || r.Rejected.Recent[0].Pos != 4 || r.Rejected.Recent[0].Reason != "bad signature" {
		t.Errorf("rejected %+v, want one at position 4 (bad signature)", r.Rejected)
	}
	if len(r.Alarms) != 0 {
		t.Errorf("alarms %q, want none", r.Alarms)
	}
	if s := fmt.Sprintf("%+v", r); strings.Contains(s, "secret") {
		t.Errorf("the report carries message contents: %s", s)
	}
	if r.Search != nil {
		t.Errorf("search %+v without a Search hook, want none", r.Search)
	}

	// The search index, as the daemon reports it: the 3 messages are not
	// indexed until IndexPending runs.
	c.Search = func(ctx context.Context) (*SearchIndex, error) {
		n, err := st.UnindexedCount(ctx)
		return &SearchIndex{Unindexed: n}, err
	}
	for _, want := range []int{3, 0} {
		r, err := c.Report(context.Background())
		if err != nil {
			t.Fatalf("Report: %v", err)
		}
		if r.Search == nil || r.Search.Unindexed != want {
			t.Errorf("search %+v, want %d unindexed", r.Search, want)
		}
		if _, _, err := st.IndexPending(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCollectorHeadBehindPosition(t *testing.T) {
	t.Parallel()
	// Before the first contact the head is unknown (0): no negative lag.
	c := &Collector{Sync: fixedStatus{Position: 4}, Store: storeWith(t, 3)}
	r, err := c.Report(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Sync.Head != 4 || r.Sync.Lag != 0 {
		t.Errorf("head %d lag %d, want 4 and 0", r.Sync.Head, r.Sync.Lag)
	}
}

func TestAlarms(t *testing.T) {
	t.Parallel()
	gap := fmt.Errorf("%w: the spool sent position 9 after 4", syncer.ErrGap).Error()
	cases := []struct {
		name  string
		st    syncer.Status
		extra string
		want  []string
	}{
		{"none", syncer.Status{LastError: "connection refused"}, "", nil},
		{"bad checkpoint", syncer.Status{BadCheckpoint: 77}, "", []string{"checkpoint at position 77 failed validation"}},
		{"gap", syncer.Status{Position: 4, LastError: gap}, "", []string{"gap", "position 4", "position 9 after 4"}},
		{"hook", syncer.Status{}, "fork detected at position 5", []string{"fork detected at position 5"}},
		{"syncer alarm", syncer.Status{Position: 8, Alarm: "chain hash mismatch at position 9", LastError: gap},
			"", []string{"sync stopped at position 8: chain hash mismatch at position 9"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			col := &Collector{Sync: fixedStatus(c.st), Store: storeWith(t, 1), Alarm: func() string { return c.extra }}
			r, err := col.Report(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(r.Alarms, "\n")
			if len(c.want) == 0 && len(r.Alarms) != 0 {
				t.Errorf("alarms %q, want none", r.Alarms)
			}
			if c.st.Alarm != "" && len(r.Alarms) != 1 {
				t.Errorf("alarms %q, want only the syncer's", r.Alarms)
			}
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("alarms %q lack %q", r.Alarms, w)
				}
			}
		})
	}
}

// Entries passed by in an entry format the device did not read (a spool
// switched to a later format before the device was upgraded) hold mail it
// does not show: the report says so and what to do, once for all of them;
// other rejections say nothing of it.
func TestCollectorUnknownVersion(t *testing.T) {
	t.Parallel()
	st := storeWith(t, 3) // one rejection, a bad signature
	c := &Collector{Sync: fixedStatus{Position: 7, Head: 7, Connected: true, LastContact: time.Now()}, Store: st}
	report := func() *Report {
		r, err := c.Report(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if a := strings.Join(report().Actions, "\n"); strings.Contains(a, "entry format") {
		t.Fatalf("actions with a bad signature alone: %q", a)
	}
	ctx := context.Background()
	for i, pos := range []uint64{5, 6} {
		if err := st.RecordRejected(ctx, pos, string(mailstore.ReasonUnknownVersion)); err != nil {
			t.Fatal(err)
		}
		want := []string{"This device passed by 1 entry in an entry format it did not read",
			"This device passed by 2 entries in an entry format it did not read"}[i]
		r := report()
		if len(r.Actions) != 1 || !strings.Contains(r.Actions[0], want) || !strings.Contains(r.Actions[0], "--db naming a new file") {
			t.Fatalf("actions %q, want one saying %q and what to do", r.Actions, want)
		}
		if r.Sync.State != StateCurrent {
			t.Errorf("state %s, want current: the sync goes on", r.Sync.State)
		}
	}
}

// TestCollectorHeld: an APPEND the spool refuses for the quota, held on the
// device, is among what to do, with the device behind.
func TestCollectorHeld(t *testing.T) {
	t.Parallel()
	const held = "an APPEND queued on this device (about 20000 bytes) is refused by the spool for the quota: it waits here"
	c := &Collector{Sync: fixedStatus{Position: 7, Head: 7, Connected: true, LastContact: time.Now(), Queued: 1, Held: held}, Store: storeWith(t, 0)}
	r, err := c.Report(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Actions) != 1 || r.Actions[0] != held {
		t.Errorf("actions %q, want the held APPEND's %q", r.Actions, held)
	}
	if r.Sync.State != StateBehind {
		t.Errorf("state %s, want behind: a change waits", r.Sync.State)
	}
}
