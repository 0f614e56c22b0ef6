package imapd

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/mailstore"
	"cspool/internal/testproc"
)

var convergeSeed = flag.Uint64("converge.seed", 0, "seed of the randomized convergence test (0: from the clock)")

// TestConvergence drives three devices on one spool with random IMAP
// operations from their own clients at the same time, interleaved with
// deliveries, and then requires every device to hold the same state, field
// by field and UID for UID, and every device's IMAP view to agree.
func TestConvergence(t *testing.T) {
	t.Parallel()
	seed := *convergeSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -converge.seed=%d)", seed, seed)
	// 120 operations a client with CSPOOL_HEAVY=1 (CI), else 40.
	ops := 40
	if testproc.Heavy() && !testing.Short() {
		ops = 120
	}
	r := newRig(t)
	devs := []*device{r.device("a"), r.device("b"), r.device("c")}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Deliveries arrive throughout.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 40; i++ {
			r.Deliver([]byte(fmt.Sprintf("From: s%d@example.org\r\nSubject: delivery %d\r\n\r\nbody %d\r\n", i, i, i)))
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
		}
	}()
	errs := make(chan error, len(devs))
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{t: t, c: d.client(nil), rng: rand.New(rand.NewPCG(seed, uint64(i))), name: fmt.Sprintf("dev%d", i)}
			errs <- w.run(ops)
		}()
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	head := r.Head()
	for _, d := range devs {
		d.synced(head)
	}
	ctx := context.Background()
	first, err := devs[0].store.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Messages) == 0 {
		t.Fatal("no messages at the end: the operations did nothing")
	}
	for i, d := range devs[1:] {
		st, err := d.store.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := mailstore.Diff(first, st, 10); diff != nil {
			t.Fatalf("device %d differs from device 0 (seed %d): %v", i+1, seed, diff)
		}
	}
	// What each device's IMAP clients see agrees too.
	views := make([]string, len(devs))
	for i, d := range devs {
		views[i] = imapView(t, d.client(nil))
	}
	for i := range views[1:] {
		if views[i+1] != views[0] {
			t.Fatalf("IMAP views differ (seed %d):\n%s\n---\n%s", seed, views[0], views[i+1])
		}
	}
	t.Logf("converged: %d mailboxes, %d messages, log head %d", len(first.Mailboxes), len(first.Messages), head)
}

// imapView lists, per mailbox, UIDVALIDITY and every UID with its flags.
func imapView(t *testing.T, c *imapclient.Client) string {
	t.Helper()
	boxes, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mb := range boxes {
		if slicesContains(mb.Attrs, imap.MailboxAttrNoSelect) {
			fmt.Fprintf(&b, "%s \\Noselect\n", mb.Mailbox)
			continue
		}
		sel, err := c.Select(mb.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			t.Fatalf("EXAMINE %s (listed with %v): %v", mb.Mailbox, mb.Attrs, err)
		}
		fmt.Fprintf(&b, "%s uidvalidity=%d exists=%d\n", mb.Mailbox, sel.UIDValidity, sel.NumMessages)
		if sel.NumMessages == 0 {
			continue
		}
		msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: sel.NumMessages}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			fmt.Fprintf(&b, "  %d %v\n", m.UID, withoutRecent(m.Flags))
		}
	}
	return b.String()
}

// worker performs random operations through one IMAP client. NO replies
// are expected (another device may have deleted the mailbox or the
// messages); BAD, a dropped connection or a stuck command are failures.
type worker struct {
	t    *testing.T
	c    *imapclient.Client
	rng  *rand.Rand
	name string
}

var convergeMailboxes = []string{"INBOX", "Archive", "Trash", "Work", "Work/Deep", "Lists"}

func (w *worker) pick(list []string) string { return list[w.rng.IntN(len(list))] }

func (w *worker) run(n int) error {
	for i := 0; i < n; i++ {
		if err := w.step(i); err != nil {
			return fmt.Errorf("%s op %d: %w", w.name, i, err)
		}
	}
	return nil
}

// ok accepts a tagged NO, not a BAD or a broken connection.
func ok(err error) error {
	if err == nil {
		return nil
	}
	if e, is := err.(*imap.Error); is && e.Type == imap.StatusResponseTypeNo {
		return nil
	}
	return err
}

func (w *worker) step(i int) error {
	c := w.c
	mbox := w.pick(convergeMailboxes)
	if _, err := c.Select(mbox, nil).Wait(); err != nil {
		if ok(err) != nil {
			return err
		}
		return ok(c.Create(mbox, nil).Wait())
	}
	sr, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		return ok(err) // the mailbox may have been deleted meanwhile
	}
	all := sr.AllUIDs()
	some := func() imap.UIDSet {
		var set imap.UIDSet
		for _, u := range all {
			if w.rng.IntN(3) == 0 {
				set.AddNum(u)
			}
		}
		if len(set) == 0 && len(all) > 0 {
			set.AddNum(all[w.rng.IntN(len(all))])
		}
		return set
	}
	flags := []imap.Flag{imap.FlagSeen, imap.FlagFlagged, imap.FlagAnswered, "$Work", "$Later"}
	switch op := w.rng.IntN(10); {
	case op == 0:
		msg := fmt.Sprintf("From: %s@example.org\r\nSubject: appended %d\r\n\r\nhello\r\n", w.name, i)
		ac := c.Append(w.pick(convergeMailboxes), int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{flags[w.rng.IntN(len(flags))]}})
		if _, err := ac.Write([]byte(msg)); err != nil {
			return err
		}
		if err := ac.Close(); err != nil {
			return err
		}
		_, err := ac.Wait()
		return ok(err)
	case op <= 3 && len(all) > 0:
		opKind := []imap.StoreFlagsOp{imap.StoreFlagsAdd, imap.StoreFlagsDel, imap.StoreFlagsSet}[w.rng.IntN(3)]
		return ok(c.Store(some(), &imap.StoreFlags{Op: opKind, Silent: w.rng.IntN(2) == 0,
			Flags: []imap.Flag{flags[w.rng.IntN(len(flags))], flags[w.rng.IntN(len(flags))]}}, nil).Close())
	case op == 4 && len(all) > 0:
		_, err := c.Copy(some(), w.pick(convergeMailboxes)).Wait()
		return ok(err)
	case op == 5 && len(all) > 0:
		_, err := c.Move(some(), w.pick(convergeMailboxes)).Wait()
		return ok(err)
	case op == 6 && len(all) > 0:
		set := some()
		if err := ok(c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()); err != nil {
			return err
		}
		if w.rng.IntN(2) == 0 {
			return ok(c.UIDExpunge(set).Close())
		}
		return ok(c.Expunge().Close())
	case op == 7:
		return ok(c.Create(w.pick(convergeMailboxes[3:]), nil).Wait())
	case op == 8:
		from := w.pick(convergeMailboxes[3:])
		to := w.pick(convergeMailboxes[3:])
		if from == to {
			to += "2"
		}
		if err := ok(c.Unselect().Wait()); err != nil {
			return err
		}
		return ok(c.Rename(from, to, nil).Wait())
	case op == 9 && w.rng.IntN(3) == 0:
		if err := ok(c.Unselect().Wait()); err != nil {
			return err
		}
		return ok(c.Delete(w.pick(append(convergeMailboxes[3:], "Work2", "Lists2"))).Wait())
	}
	return ok(c.Noop().Wait())
}

func slicesContains(attrs []imap.MailboxAttr, a imap.MailboxAttr) bool {
	for _, x := range attrs {
		if x == a {
			return true
		}
	}
	return false
}
