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

// TestSelectBeforeRestoreTold: a new device restores a checkpoint while a
// client appends to INBOX (queued, shown at once), so the restore's commit
// gives INBOX a new UIDVALIDITY on the device, deleted and created again
// for sessions. Between that commit and the server hearing it (held
// here), a new connection's SELECT INBOX answers the store's INBOX: its
// count, UIDVALIDITY and UIDs, and SEARCH finds the appended message,
// where it answered the listing from before the restore (EXISTS 1) with
// the new UIDVALIDITY, and read the restored messages by the old UIDs.
func TestSelectBeforeRestoreTold(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := newRig(t)
	const restored = 300
	var pos uint64
	for i := range restored {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: restored %d\r\n\r\nbody\r\n", i))
	}
	a := r.Running("a", syncer.Config{CheckpointMin: -1})
	a.Synced(pos)
	if _, at, err := a.Sync.WriteCheckpoint(ctx); err != nil || at != pos {
		t.Fatalf("checkpoint: at %d, %v; want %d", at, err, pos)
	}

	inbox := mailstore.InboxID()
	var srvMu sync.Mutex
	var srv *Server
	committed, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src := &restoringSource{StoreSource: r.Source()}
	dt := r.Device("b", syncer.Config{Source: src, CheckpointMin: -1,
		Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond,
		OnApplied: func(res *mailstore.Result) {
			if slices.ContainsFunc(res.Changes, func(c mailstore.Change) bool {
				return c.Kind == mailstore.MailboxDeleted && c.Mailbox == inbox
			}) {
				// The restore's commit: the server hears it once the
				// test has looked.
				once.Do(func() {
					close(committed)
					<-release
				})
			}
			srvMu.Lock()
			s := srv
			srvMu.Unlock()
			s.Applied(res)
		}})
	s, err := New(Config{Store: dt.Store, Submit: dt.Sync, User: "alice", Password: testPassword, Logger: devicetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	srvMu.Lock()
	srv = s
	srvMu.Unlock()
	d := &device{t: t, store: dt.Store, sync: dt.Sync, srv: s}

	const subject = "appended during the restore"
	appended := make(chan error, 1)
	// The address, once serveAndSync has it: the restore (and so this
	// hook) may begin before serveAndSync returns.
	addrc := make(chan string, 1)
	src.fetching = func() {
		go func() {
			var addr string
			select {
			case addr = <-addrc:
			case <-ctx.Done():
				appended <- ctx.Err()
				return
			}
			c, err := imapclient.DialInsecure(addr, nil)
			if err != nil {
				appended <- err
				return
			}
			if err = c.Login("alice", testPassword).Wait(); err == nil {
				body := "From: a@example.org\r\nSubject: " + subject + "\r\n\r\nx\r\n"
				ac := c.Append("INBOX", int64(len(body)), nil)
				ac.Write([]byte(body))
				ac.Close()
				var data *imap.AppendData
				if data, err = ac.Wait(); err == nil && data.UID != 1 {
					err = fmt.Errorf("APPEND into the empty INBOX: UID %d, want 1", data.UID)
				}
			}
			if err == nil {
				// A session that shows the message, and goes on.
				_, err = c.Select("INBOX", nil).Wait()
			}
			t.Cleanup(func() { c.Close() })
			appended <- err
		}()
		select {
		case err := <-appended:
			appended <- err
		case <-ctx.Done():
		}
	}
	d.addr = serveAndSync(t, s, dt.Sync)
	addrc <- d.addr
	select {
	case <-committed:
	case <-ctx.Done():
		t.Fatal("the restore did not commit")
	}
	defer close(release)
	if err := <-appended; err != nil {
		t.Fatalf("APPEND during the restore: %v", err)
	}

	want := storeListing(t, d, inbox)
	if len(want) != restored+1 {
		t.Fatalf("the store's INBOX after the restore holds %d messages, want %d", len(want), restored+1)
	}
	id, err := d.store.MailboxIdentity(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if id.UIDValidity < 1<<31 {
		t.Fatalf("INBOX's UIDVALIDITY after the restore is %d, want one of this device (2^31 or more)", id.UIDValidity)
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
	hits, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
	if err != nil {
		t.Fatalf("SEARCH SUBJECT: %v", err)
	}
	if got := hits.AllSeqNums(); !slices.Equal(got, []uint32{uint32(len(want))}) {
		t.Errorf("SEARCH SUBJECT of the appended message: %v, want [%d]", got, len(want))
	}
}
