package imapd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/sync/semaphore"

	"cspool/internal/mailstore"
)

// poolMailbox delivers a mailbox for the pool's tests: random messages
// of every shape randomMessage makes (quoted-printable, base64, latin-1,
// unknown charsets, multiparts with attachments, forwarded messages,
// broken headers), messages that are not MIME at all, and two of more
// text than the pool takes (searchPoolBytes) and the index takes for one
// body, the first of which the half-built index lists as unindexable and
// keeps the texts of. It returns the random messages (for needles) and
// the words only the large ones hold.
func poolMailbox(t *testing.T, r *rand.Rand, rg *rig, d *device) (msgs []string, bigWords []string) {
	t.Helper()
	huge := func(word string) string {
		var b strings.Builder
		b.WriteString("From: big@example.org\r\nSubject: big " + word + "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
		for b.Len() < searchPoolBytes+4096 {
			b.WriteString("filler text of a long message, Straße and σοφία\r\n")
		}
		b.WriteString("the end holds " + word + "\r\n")
		return b.String()
	}
	var last uint64
	for i := range 70 {
		var m string
		switch {
		case i == 3:
			m = huge("Aardvarkish")
			bigWords = append(bigWords, "aardvarkish")
		case i == 60:
			m = huge("Zebraesque")
			bigWords = append(bigWords, "ZEBRAESQUE")
		case i%17 == 5:
			// No header at all, NULs and 8-bit bytes.
			m = fmt.Sprintf("not a header %d\x00\xff quarterly \xe9t\xe9\r\nmore text\r\n", i)
		default:
			m = randomMessage(r, i)
			msgs = append(msgs, m)
		}
		last = rg.Deliver([]byte(m))
	}
	d.synced(last)
	return msgs, bigWords
}

// unindexed delivers msg(i) for each i below n to d, waits until d has
// applied them, and drops d's search index (Reindex: it is built again in
// the background), so that a SEARCH of their text reads their bodies.
func unindexed(t *testing.T, rg *rig, d *device, n int, msg func(i int) []byte) {
	t.Helper()
	var last uint64
	for i := range n {
		last = rg.Deliver(msg(i))
	}
	d.synced(last)
	if err := d.store.Reindex(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// holdWorkers makes each worker of d's SEARCHes wait, as it takes a
// message, until release is called (or 30 s have passed); entered gets a
// value for each message taken, with room for n. release may be called
// more than once; it is called at the test's end.
func holdWorkers(t *testing.T, d *device, n int) (entered <-chan struct{}, release func()) {
	in, held := make(chan struct{}, n), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	hook := func(int) {
		in <- struct{}{}
		select {
		case <-held:
		case <-time.After(30 * time.Second):
		}
	}
	d.srv.searchHook.Store(&hook)
	t.Cleanup(release)
	return in, release
}

// TestSearchPoolSameAsSerial checks that SEARCH gives the same answer with
// its bodies tested on workers (searchpool.go) as on the scan's goroutine
// alone, and as the reference matcher over every message: random
// criteria (BODY, TEXT, HEADER, NOT, OR, needles of 1 to 12 code points
// in random case) over a mailbox of messages of every shape, with the
// index dropped and half built (so that some messages are indexed, some
// not, one kept as texts and one too large for the pool).
func TestSearchPoolSameAsSerial(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 11))
	rg := newRig(t)
	d := rg.device("a")
	msgs, bigWords := poolMailbox(t, r, rg, d)
	ctx := context.Background()
	if err := d.store.Reindex(ctx); err != nil {
		t.Fatal(err)
	}
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	inbox, err := d.store.MailboxByName(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	reference := scanned(t, d.store, inbox)
	search := func(workers int32, crit *imap.SearchCriteria) []uint32 {
		t.Helper()
		d.srv.searchWorkers.Store(workers)
		data, err := c.Search(crit, nil).Wait()
		if err != nil {
			t.Fatalf("SEARCH %#v with %d workers: %v", crit, workers, err)
		}
		return data.AllSeqNums()
	}
	same := func(a, b []uint32) bool { return slices.Equal(a, b) || len(a) == 0 && len(b) == 0 }
	check := func(phase string) {
		t.Helper()
		pooled := d.srv.searchPooled.Load()
		crits := []imap.SearchCriteria{{Body: bigWords[:1]}, {Text: bigWords[1:]}, {Body: []string{"quarterly"}},
			{Body: []string{"a"}}, {Text: []string{"é"}}, {Not: []imap.SearchCriteria{{Body: []string{"report"}}}}}
		for range 14 {
			crits = append(crits, randomCriteria(r, msgs, 0))
		}
		hits := 0
		for i, crit := range crits {
			want := scanSearch(t, reference, &crit)
			serial := search(-1, &crit)
			workers := int32(1 + 2*(i%2)) // 1 or 3
			if got := search(workers, &crit); !same(got, serial) || !same(got, want) {
				t.Fatalf("%s: SEARCH %#v: %d workers give %v, the scan's goroutine alone %v, the reference %v (seed %d)",
					phase, crit, workers, got, serial, want, seed)
			}
			if len(want) > 0 {
				hits++
			}
		}
		if d.srv.searchPooled.Load() == pooled {
			t.Fatalf("%s: no message was handed to a worker", phase)
		}
		t.Logf("%s: %d queries, %d with matches, %d messages handed to workers", phase, len(crits), hits, d.srv.searchPooled.Load()-pooled)
	}
	check("index dropped")
	if _, left, err := d.store.IndexPending(ctx, 35); err != nil || left != 35 {
		t.Fatalf("IndexPending: %d left, %v; want 35 left", left, err)
	}
	if n, err := d.store.UnindexedCount(ctx); err != nil || n != 35 {
		t.Fatalf("UnindexedCount: %d, %v", n, err)
	}
	check("index half built")
}

// TestSearchPoolSpreads checks that a SEARCH BODY over bodies the index
// does not hold tests them on several goroutines at once: with two
// workers, the first to take a message waits in the hook until the
// other has taken one too, which it can only do while the first holds
// its message. Every message goes through a worker, and the answer is
// the scan's.
func TestSearchPoolSpreads(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	d := rg.device("a")
	const n = 24
	unindexed(t, rg, d, n, func(i int) []byte {
		word := "plain"
		if i%3 == 0 {
			word = "Needleword"
		}
		return fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsome text =\r\nwith %s in it\r\n", i, word)
	})
	var mu sync.Mutex
	took := map[int]int{} // messages each worker took
	both := make(chan struct{})
	var once sync.Once
	hook := func(w int) {
		mu.Lock()
		took[w]++
		busy := len(took)
		mu.Unlock()
		if busy == 2 {
			once.Do(func() { close(both) })
		}
		select {
		case <-both:
		case <-time.After(20 * time.Second):
		}
	}
	d.srv.searchHook.Store(&hook)
	d.srv.searchWorkers.Store(2)
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	before := d.srv.searchPooled.Load()
	data, err := c.Search(&imap.SearchCriteria{Body: []string{"needleWORD"}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := data.AllSeqNums(), []uint32{1, 4, 7, 10, 13, 16, 19, 22}; !slices.Equal(got, want) {
		t.Errorf("SEARCH BODY: %v, want %v", got, want)
	}
	select {
	case <-both:
	default:
		t.Errorf("the second worker took no message while the first held one (taken: %v)", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := d.srv.searchPooled.Load() - before; got != n || took[0]+took[1] != n {
		t.Errorf("%d messages handed to the workers, %v taken, want %d", got, took, n)
	}
}

// poolWorkers counts the goroutines running a SEARCH's workers.
func poolWorkers() int {
	buf := make([]byte, 1<<20)
	for {
		k := runtime.Stack(buf, true)
		if k < len(buf) {
			return strings.Count(string(buf[:k]), "imapd.(*searchPool).work(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestSearchPoolCancelled ends a SEARCH's context while its workers hold
// messages: the scan stops with the context's error, the messages handed
// over and not taken yet are let go untested, and no worker is left
// running. Not parallel: it counts the workers of every SEARCH of the
// process.
func TestSearchPoolCancelled(t *testing.T) {
	rg := newRig(t)
	d := rg.device("a")
	var last uint64
	for i := range 40 {
		last = rg.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i))
	}
	d.synced(last)
	inbox, err := d.store.MailboxByName(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan int, 8)
	release := make(chan struct{})
	calls := 0
	var mu sync.Mutex
	hook := func(w int) {
		mu.Lock()
		calls++
		mu.Unlock()
		entered <- w
		<-release
	}
	d.srv.searchHook.Store(&hook)
	d.srv.searchWorkers.Store(2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crit := &imap.SearchCriteria{Body: []string{"body"}}
	pool := d.srv.newSearchPool(ctx, crit, &matcher{recent: func(imap.UID) bool { return false }})
	seq := uint32(0)
	scanErr := d.store.Scan(ctx, inbox.ID, 0, func(m *mailstore.Message) error {
		seq++
		if seq == 4 {
			// Two workers hold a message each, and two more wait.
			for range 2 {
				select {
				case <-entered:
				case <-time.After(20 * time.Second):
					return errors.New("no worker took a message")
				}
			}
			cancel()
		}
		return pool.add(ctx, ref{uid: imap.UID(m.UID), seq: seq}, m)
	})
	close(release)
	matched, err := pool.wait(nil, scanErr)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("SEARCH after its context ended: %v, %v matched; want context.Canceled", err, matched)
	}
	if seq != 4 {
		t.Errorf("the scan went on to message %d after its context ended", seq)
	}
	mu.Lock()
	if calls != 2 {
		t.Errorf("workers took %d messages, want the 2 they held when the context ended", calls)
	}
	mu.Unlock()
	left := poolWorkers()
	for i := 0; i < 500 && left > 0; i++ {
		time.Sleep(10 * time.Millisecond)
		left = poolWorkers()
	}
	if left > 0 {
		t.Errorf("%d workers still running after the SEARCH ended", left)
	}
}

// TestSearchPoolPanic makes a worker's test panic: the SEARCH's
// connection ends, as when the test panicked on the connection's own
// goroutine (go-imap recovers a command's panic and closes the
// connection), and the server goes on serving; on the worker the panic
// ended the process.
func TestSearchPoolPanic(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	d := rg.device("a")
	unindexed(t, rg, d, 6, func(i int) []byte {
		return fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i)
	})
	hook := func(int) { panic("a test that breaks") }
	d.srv.searchHook.Store(&hook)
	d.srv.searchWorkers.Store(2)
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	if data, err := c.Search(&imap.SearchCriteria{Body: []string{"body"}}, nil).Wait(); err == nil {
		t.Fatalf("SEARCH whose test panicked: %v, no error", data.AllSeqNums())
	}
	d.srv.searchHook.Store(nil)
	c2 := d.client(nil)
	mustSelect(t, c2, "INBOX")
	data, err := c2.Search(&imap.SearchCriteria{Body: []string{"body"}}, nil).Wait()
	if err != nil {
		t.Fatalf("SEARCH on a new connection: %v", err)
	}
	if got := data.AllSeqNums(); len(got) != 6 {
		t.Errorf("SEARCH on a new connection: %v, want the 6 messages", got)
	}
}

// TestSearchPoolsShareABound runs two SEARCHes at once, on two
// connections, with their workers held: the messages handed over and not
// tested yet, of both together, stay within the server's bound
// (Server.searchMem, here three messages' bytes). Before, each SEARCH had
// a bound of its own alone, so that every connection searching at once
// held its own 1 MiB: here eight messages, four for each.
func TestSearchPoolsShareABound(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	d := rg.device("a")
	const n = 24
	msg := func(i int) []byte {
		return fmt.Appendf(nil, "From: a@example.org\r\nSubject: %02d\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsome text =\r\nwith Needleword in it\r\n", i)
	}
	unindexed(t, rg, d, n, msg)
	d.srv.searchMem = semaphore.NewWeighted(3 * int64(len(msg(0))))
	entered, release := holdWorkers(t, d, 2*n)
	d.srv.searchWorkers.Store(2)
	before := d.srv.searchPooled.Load()
	var cmds []*imapclient.SearchCommand
	for range 2 {
		c := d.client(nil)
		mustSelect(t, c, "INBOX")
		cmds = append(cmds, c.Search(&imap.SearchCriteria{Body: []string{"needleWORD"}}, nil))
	}
	// Two workers hold a message each (those of the SEARCH that came
	// first; the third message waits for one of them).
	for range 2 {
		select {
		case <-entered:
		case <-time.After(20 * time.Second):
			release()
			t.Fatalf("no two workers took a message (%d handed over)", d.srv.searchPooled.Load()-before)
		}
	}
	// Time for more to be handed over, if the bound let them.
	time.Sleep(300 * time.Millisecond)
	handed := d.srv.searchPooled.Load() - before
	release()
	if handed > 3 {
		t.Errorf("%d messages handed to the workers of two SEARCHes while none was tested, want at most 3 (the server's bound)", handed)
	}
	for i, cmd := range cmds {
		data, err := cmd.Wait()
		if err != nil {
			t.Fatalf("SEARCH %d: %v", i, err)
		}
		if got := data.AllSeqNums(); len(got) != n {
			t.Errorf("SEARCH %d: %d messages, want all %d", i, len(got), n)
		}
	}
}
