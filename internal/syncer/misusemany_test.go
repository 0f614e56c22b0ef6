package syncer

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/testproc"
)

// visitingStore is a device's store that adds up the rows of the table of
// rejections its reads of that table visit, as SQLite reads them:
// Forbidden counts the records of a reason, which has no index, so it
// visits every row; RejectedAsAfter reads a range of the table's key, the
// rows after the position it is given.
type visitingStore struct {
	*mailstore.Store
	visited int
}

func (v *visitingStore) rowsAfter(ctx context.Context, after uint64) int {
	all, err := v.Store.Rejected(ctx, 0)
	if err != nil {
		panic(err)
	}
	n := 0
	for _, r := range all {
		if r.Pos > after {
			n++
		}
	}
	return n
}

func (v *visitingStore) Forbidden(ctx context.Context) (int, *mailstore.Rejection, error) {
	v.visited += v.rowsAfter(ctx, 0)
	return v.Store.Forbidden(ctx)
}

func (v *visitingStore) RejectedAsAfter(ctx context.Context, reason mailstore.Reason, after uint64, fn func(mailstore.Rejection) error) error {
	v.visited += v.rowsAfter(ctx, after)
	return v.Store.RejectedAsAfter(ctx, reason, after, fn)
}

// TestMisuseAmongManyRejections: a spool serves a flood of entries signed
// by a stranger (rejected and passed by, each recorded), then batches that
// each hold an entry the spool's key signed that only the user may write
// (the misuse alarm). Each such batch counts what it adds to the alarm,
// not every rejection the store holds: before, each counted every record
// of the reason again, over the whole table, so the 20 batches here
// visited every one of the flood's rows 20 times. The alarm still counts
// every such entry and names the newest, and again from the store at the
// next start.
func TestMisuseAmongManyRejections(t *testing.T) {
	testproc.SkipUnderRace(t)
	ctx := context.Background()
	const strangers, batches, per = 5000, 20, 10
	r := newRig(t)
	bs := r.strangers(strangers)
	if _, err := r.log.Append(ctx, "alice", bs); err != nil {
		t.Fatal(err)
	}
	r.deliver(r.spool, msg(0))
	first, ms := r.deviceWith("a", Config{})
	syncAll(t, first)

	bs = nil
	for i := range batches {
		for j := range per {
			c := msg(i*per + j)
			if j == per/2 {
				c = &command.Command{Kind: command.CreateMailbox, Mailbox: "Evil" + string(rune('A'+i))}
			}
			b, _, err := entry.Seal(c, r.spool, r.user.Public(), "alice", nil)
			if err != nil {
				t.Fatal(err)
			}
			bs = append(bs, b)
		}
	}
	firstPos, err := r.log.Append(ctx, "alice", bs)
	if err != nil {
		t.Fatal(err)
	}
	newest := firstPos + uint64((batches-1)*per+per/2)
	vs := &visitingStore{Store: ms}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: vs, BatchCount: per})
	if err != nil {
		t.Fatal(err)
	}
	atStart := vs.visited
	syncAll(t, s)
	visited := vs.visited - atStart
	t.Logf("%d batches with an entry beyond the spool's rights visited %d rows of rejections after %d rejections (%d at the start)", batches, visited, strangers, atStart)
	if visited > 2*batches*per {
		t.Errorf("%d batches with an entry beyond the spool's rights visited %d rows of rejections after %d rejections: want those of the batches alone, at most %d", batches, visited, strangers, 2*batches*per)
	}
	want := "the spool's key signed 20 entries that only the user may write (the newest at position " + strconv.FormatUint(newest, 10) + ":"
	if st := s.Status(); !strings.Contains(st.Misuse, want) || st.Rejected != batches {
		t.Errorf("status: misuse %q, %d rejected; want %q and %d", st.Misuse, st.Rejected, want, batches)
	}
	again, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: ms})
	if err != nil {
		t.Fatal(err)
	}
	if st := again.Status(); !strings.Contains(st.Misuse, want) {
		t.Errorf("status at the next start: misuse %q, want %q", st.Misuse, want)
	}
}
