package syncer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/spool"
)

// twoFaced shows its device a different entry at one position: the spool
// forking the log between devices.
type twoFaced struct {
	StoreSource
	mu     sync.Mutex
	at     uint64
	data   []byte
	rewind uint64 // when set, report this head (a rollback)
}

func (f *twoFaced) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	lr, err := f.StoreSource.ReadLog(ctx, after, n, b, min(wait, 100*time.Millisecond))
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range lr.Entries {
		if lr.Entries[i].Pos == f.at {
			lr.Entries[i].Data = f.data
		}
	}
	if f.rewind != 0 {
		lr.Head, lr.Entries = f.rewind, nil
	}
	if err == nil && lr.Chained && f.at != 0 {
		// A forking spool keeps its story consistent: the hashes it
		// vouches for are those of the history it shows.
		all, rerr := f.Store.Read(ctx, f.User, 0, 1<<20, 1<<40)
		if rerr != nil {
			return lr, rerr
		}
		var h spool.Hash
		for _, e := range all {
			if e.Pos == f.at {
				e.Data = f.data
			}
			h = spool.ChainNext(h, e.Data)
			if e.Pos == after {
				lr.StartHash = h
			}
			if e.Pos == lr.Head {
				lr.HeadHash = h
			}
		}
	}
	return lr, err
}

func TestForkDetectedWhenHistoriesMeet(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		r.deliver(r.spool, msg(i))
	}
	// Device b is shown another message at position 2 than device a.
	other, _, err := entry.Seal(msg(99), r.spool, r.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, msa := r.device("a", nil, nil)
	b, _ := r.device("b", &twoFaced{StoreSource: StoreSource{Store: r.log, User: "alice"}, at: 2, data: other}, nil)
	stopA, stopB := run(t, a), run(t, b)
	defer stopA()
	defer stopB()
	if err := b.WaitApplied(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitApplied(ctx, 3); err != nil {
		t.Fatal(err)
	}
	// Nothing is wrong yet as far as each device can tell.
	if b.Status().Alarm != "" {
		t.Fatalf("alarm before the histories met: %s", b.Status().Alarm)
	}
	_, msgs := inbox(t, msa)
	if _, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[0].ID}}); err != nil {
		t.Fatal(err)
	}
	for b.Status().Alarm == "" {
		if ctx.Err() != nil {
			t.Fatal("device b never noticed the fork")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if alarm := b.Status().Alarm; !strings.Contains(alarm, "fork") || !strings.Contains(alarm, "position 3") {
		t.Fatalf("alarm %q: want it to name the fork and the position", alarm)
	}
	if b.Status().Position != 3 {
		t.Fatalf("device b applied past the forked command: position %d", b.Status().Position)
	}
	// The alarm survives a restart of the device and blocks changes.
	if _, err := b.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "X"}); err == nil {
		t.Fatal("submit accepted while an integrity alarm is raised")
	}
}

func TestRollbackDetected(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		r.deliver(r.spool, msg(i))
	}
	src := &twoFaced{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	d, ms := r.device("d", src, nil)
	syncAll(t, d)
	src.mu.Lock()
	src.rewind = 2
	src.mu.Unlock()
	if _, err := d.SyncOnce(ctx); err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("sync against a rolled-back spool: got %v, want a rollback alarm", err)
	}
	alarms, err := ms.Alarms(ctx)
	if err != nil || len(alarms) != 1 {
		t.Fatalf("alarms %v, %v: want one recorded", alarms, err)
	}
	// A restarted daemon on the same database still has the alarm.
	again, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(),
		Source: StoreSource{Store: r.log, User: "alice"}, Store: ms})
	if err != nil {
		t.Fatal(err)
	}
	if again.Status().Alarm == "" {
		t.Fatal("the alarm did not survive a restart")
	}
}
