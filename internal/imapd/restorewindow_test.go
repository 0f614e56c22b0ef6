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
	"cspool/internal/devicetest"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
	"cspool/internal/syncer"
)

// restoringSource is the spool as a device sees it, which calls fetching
// at its second read (the first finds the log compacted; the next ones
// fetch the checkpoint's bodies, inside the restore).
type restoringSource struct {
	syncer.StoreSource
	mu       sync.Mutex
	reads    int
	fetching func()
}

func (s *restoringSource) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	s.mu.Lock()
	var hook func()
	if s.reads++; s.reads == 2 {
		hook, s.fetching = s.fetching, nil
	}
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return s.StoreSource.ReadLog(ctx, after, n, b, wait)
}

// restoreWindow is a new device ("b") that restores a checkpoint of
// restored messages ("Subject: restored i", UIDs 1 to restored) while a
// client appends to INBOX (queued, shown at once as UID 1), so the
// restore's commit gives INBOX a new UIDVALIDITY on the device, deleted
// and created again for sessions: UID 1 is then "restored 0" and the
// appended message is UID restored+1. The server hears that commit only
// once the test calls release. before, if set, runs on the device that
// wrote the checkpoint ("a") before it writes it.
type restoreWindow struct {
	d *device
	// held are the sessions that had INBOX selected before the commit,
	// each showing one message: UID 1, the appended one.
	held []*imapclient.Client
	// expunged gets, for each of held, the sequence numbers of the
	// EXPUNGEs it reads.
	expunged []chan uint32
	// uidValidity is the UIDVALIDITY they were shown.
	uidValidity uint32
	release     func() // lets the server hear the commit; once is enough
	// heard is closed once Applied has returned for the commit.
	heard chan struct{}
	// submitted gets each command the server submits.
	submitted chan *command.Command
}

// notingSubmitter tells of each command before submitting it.
type notingSubmitter struct {
	Submitter
	noted chan<- *command.Command
}

func (s notingSubmitter) Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error) {
	for _, c := range cmds {
		select {
		case s.noted <- c:
		default:
		}
	}
	return s.Submitter.Submit(ctx, cmds...)
}

// appendedSubject is the subject of the message appended during the
// restore.
const appendedSubject = "appended during the restore"

func newRestoreWindow(t *testing.T, ctx context.Context, restored, sessions int, before func(a *devicetest.Device)) *restoreWindow {
	t.Helper()
	r := newRig(t)
	var pos uint64
	for i := range restored {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: restored %d\r\n\r\nbody\r\n", i))
	}
	a := r.Running("a", syncer.Config{CheckpointMin: -1})
	a.Synced(pos)
	if before != nil {
		before(a)
	}
	if _, at, err := a.Sync.WriteCheckpoint(ctx); err != nil || at < pos {
		t.Fatalf("checkpoint: at %d, %v; want %d or later", at, err, pos)
	}

	inbox := mailstore.InboxID()
	var srvMu sync.Mutex
	var srv *Server
	committed, release, heard := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	src := &restoringSource{StoreSource: r.Source()}
	dt := r.Device("b", syncer.Config{Source: src, CheckpointMin: -1,
		Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond,
		OnApplied: func(res *mailstore.Result) {
			first := false
			if slices.ContainsFunc(res.Changes, func(c mailstore.Change) bool {
				return c.Kind == mailstore.MailboxDeleted && c.Mailbox == inbox
			}) {
				// The restore's commit: the server hears it once the
				// test has looked.
				once.Do(func() {
					first = true
					close(committed)
					<-release
				})
			}
			srvMu.Lock()
			s := srv
			srvMu.Unlock()
			s.Applied(res)
			if first {
				close(heard)
			}
		}})
	submitted := make(chan *command.Command, 64)
	s, err := New(Config{Store: dt.Store, Submit: notingSubmitter{dt.Sync, submitted}, User: "alice", Password: testPassword, Logger: devicetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	srvMu.Lock()
	srv = s
	srvMu.Unlock()
	w := &restoreWindow{d: &device{t: t, store: dt.Store, sync: dt.Sync, srv: s}, heard: heard, submitted: submitted,
		release: func() { released.Do(func() { close(release) }) }}

	type opened struct {
		c   *imapclient.Client
		sel *imap.SelectData
		err error
	}
	for range sessions {
		w.expunged = append(w.expunged, make(chan uint32, 64))
	}
	appended := make(chan []opened, 1)
	// The address, once serveAndSync has it: the restore (and so this
	// hook) may begin before serveAndSync returns.
	addrc := make(chan string, 1)
	src.fetching = func() {
		go func() {
			var addr string
			select {
			case addr = <-addrc:
			case <-ctx.Done():
				appended <- []opened{{err: ctx.Err()}}
				return
			}
			var out []opened
			for k := range sessions {
				exp := w.expunged[k]
				c, err := imapclient.DialInsecure(addr, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
					Expunge: func(seq uint32) {
						select {
						case exp <- seq:
						default:
						}
					},
				}})
				if err != nil {
					out = append(out, opened{err: err})
					break
				}
				t.Cleanup(func() { c.Close() })
				err = c.Login("alice", testPassword).Wait()
				if err == nil && k == 0 {
					body := "From: a@example.org\r\nSubject: " + appendedSubject + "\r\n\r\nx\r\n"
					ac := c.Append("INBOX", int64(len(body)), nil)
					ac.Write([]byte(body))
					ac.Close()
					var data *imap.AppendData
					if data, err = ac.Wait(); err == nil && data.UID != 1 {
						err = fmt.Errorf("APPEND into the empty INBOX: UID %d, want 1", data.UID)
					}
				}
				var sel *imap.SelectData
				if err == nil {
					// A session that shows the message, and goes on.
					sel, err = c.Select("INBOX", nil).Wait()
				}
				if err == nil && sel.NumMessages != 1 {
					err = fmt.Errorf("SELECT INBOX during the restore: EXISTS %d, want 1", sel.NumMessages)
				}
				out = append(out, opened{c, sel, err})
				if err != nil {
					break
				}
			}
			appended <- out
		}()
		select {
		case out := <-appended:
			appended <- out
		case <-ctx.Done():
		}
	}
	w.d.addr = serveAndSync(t, s, dt.Sync)
	// Before the sync loop is stopped (cleanups run last first).
	t.Cleanup(w.release)
	addrc <- w.d.addr
	select {
	case <-committed:
	case <-ctx.Done():
		t.Fatal("the restore did not commit")
	}
	for _, o := range <-appended {
		if o.err != nil {
			t.Fatalf("APPEND and SELECT during the restore: %v", o.err)
		}
		w.held = append(w.held, o.c)
		w.uidValidity = o.sel.UIDValidity
	}
	id, err := w.d.store.MailboxIdentity(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if id.UIDValidity < 1<<31 || id.UIDValidity == w.uidValidity {
		t.Fatalf("INBOX's UIDVALIDITY after the restore is %d (shown before: %d), want another one of this device (2^31 or more)",
			id.UIDValidity, w.uidValidity)
	}
	for len(w.submitted) > 0 {
		<-w.submitted // the APPEND
	}
	return w
}

// TestSelectBeforeRestoreTold: between the commit of a restore that
// gives INBOX a new UIDVALIDITY (restoreWindow) and the server hearing
// it, a new connection's SELECT INBOX answers the store's INBOX: its
// count, UIDVALIDITY and UIDs, and SEARCH finds the appended message,
// where it answered the listing from before the restore (EXISTS 1) with
// the new UIDVALIDITY, and read the restored messages by the old UIDs.
func TestSelectBeforeRestoreTold(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const restored = 300
	w := newRestoreWindow(t, ctx, restored, 1, nil)
	d, inbox := w.d, mailstore.InboxID()

	want := storeListing(t, d, inbox)
	if len(want) != restored+1 {
		t.Fatalf("the store's INBOX after the restore holds %d messages, want %d", len(want), restored+1)
	}
	id, err := d.store.MailboxIdentity(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	c := d.client(nil)
	sel := mustSelect(t, c, "INBOX")
	if sel.NumMessages != uint32(len(want)) || sel.UIDValidity != id.UIDValidity {
		t.Errorf("SELECT INBOX after the restore's commit: EXISTS %d, UIDVALIDITY %d; the store holds %d messages, UIDVALIDITY %d",
			sel.NumMessages, sel.UIDValidity, len(want), id.UIDValidity)
	}
	if got := fetchListing(t, c); !slices.Equal(got, want) {
		t.Errorf("FETCH after the restore's commit answers\n%s\nthe store holds\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	hits, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: appendedSubject}}}, nil).Wait()
	if err != nil {
		t.Fatalf("SEARCH SUBJECT: %v", err)
	}
	if got := hits.AllSeqNums(); !slices.Equal(got, []uint32{uint32(len(want))}) {
		t.Errorf("SEARCH SUBJECT of the appended message: %v, want [%d]", got, len(want))
	}
}
