package imapd

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// outsideMessages are messages whose bodies test case folding off the
// ASCII path: ß, the three sigmas, the Kelvin sign, dotted and dotless
// capital I, in UTF-8, quoted-printable latin-1 and base64, plus plain
// ASCII ones of more than a 4 KiB window.
func outsideMessages() []string {
	long := strings.Repeat("filler line of ascii text\r\n", 200) // 5,400 bytes
	mk := func(i int, cte, charset, body string) string {
		return fmt.Sprintf("From: a@example.org\r\nTo: b@example.org\r\nSubject: m%d\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: text/plain; charset=%s\r\nContent-Transfer-Encoding: %s\r\n\r\n%s\r\n", i, charset, cte, body)
	}
	return []string{
		mk(1, "8bit", "utf-8", "Die STRASSE heißt Straße"),
		mk(2, "quoted-printable", "iso-8859-1", "Gr=FC=DFe aus M=FCnchen"),
		mk(3, "8bit", "utf-8", "ΣΊΣΥΦΟΣ σίσυφος Σίσυφος"),
		mk(4, "base64", "utf-8", base64.StdEncoding.EncodeToString([]byte("İstanbul İZMİR ıi"))),
		mk(5, "8bit", "utf-8", "temperature 300 \u212a and 300 K"),
		mk(6, "7bit", "us-ascii", long+"NEEDLEATEND"),
		mk(7, "7bit", "us-ascii", strings.Repeat("x", 4095)+"Ab"),
		mk(8, "8bit", "utf-8", "kelvin lower k only"),
	}
}

// TestSearchPoolOutsideSameAnswers sends SEARCH commands as a client
// would write them, over a raw connection, with the bodies tested on the
// connection's goroutine and on workers, and compares the answers byte
// for byte: CHARSET UTF-8 and ISO-8859-1 literals, ESEARCH's RETURN (MIN
// MAX COUNT ALL) and SAVE with $ after, UID SEARCH, NOT and OR nested
// deep, needles whose folding is not ASCII's (ß, the sigmas, the Kelvin
// sign, İ) and ASCII needles across a 4 KiB window's end.
func TestSearchPoolOutsideSameAnswers(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	d := rg.device("a")
	ms := outsideMessages()
	unindexed(t, rg, d, len(ms), func(i int) []byte { return []byte(ms[i]) })
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	deep := "BODY zzz"
	for range 40 {
		deep = "NOT (OR " + deep + " BODY yyy)"
	}
	cmds := []string{
		"SEARCH BODY strasse",
		"SEARCH CHARSET UTF-8 BODY " + lit("STRAẞE"),
		"SEARCH CHARSET UTF-8 BODY " + lit("straße"),
		"SEARCH CHARSET UTF-8 BODY " + lit("STRASSE"),
		"SEARCH CHARSET ISO-8859-1 BODY " + lit("gr\xfc\xdf"),
		"SEARCH CHARSET UTF-8 BODY " + lit("ς"),
		"SEARCH CHARSET UTF-8 BODY " + lit("ΣΊΣΥΦΟΣ"),
		"SEARCH CHARSET UTF-8 TEXT " + lit("σίσυφοσ"),
		"SEARCH CHARSET UTF-8 BODY " + lit("\u212a"),
		"SEARCH CHARSET UTF-8 BODY " + lit("300 \u212a"),
		"SEARCH BODY k",
		"SEARCH CHARSET UTF-8 BODY " + lit("İ"),
		"SEARCH CHARSET UTF-8 BODY " + lit("İstanb"),
		"SEARCH CHARSET UTF-8 BODY " + lit("izmir"),
		"SEARCH CHARSET UTF-8 BODY " + lit("ı"),
		"SEARCH BODY needleatend",
		"SEARCH BODY xxab",
		"SEARCH BODY " + strings.Repeat("X", 1025),
		"SEARCH " + deep,
		"SEARCH NOT NOT NOT BODY filler",
		"SEARCH CHARSET UTF-8 OR OR BODY " + lit("straße") + " BODY " + lit("σ") + " OR TEXT m3 NOT BODY k",
		"SEARCH RETURN (MIN MAX COUNT ALL) BODY e",
		"UID SEARCH RETURN (MIN MAX COUNT) CHARSET UTF-8 OR BODY k BODY " + lit("ẞ"),
		"SEARCH RETURN (SAVE) BODY k",
		"SEARCH $ BODY 300",
		"UID SEARCH RETURN (SAVE MIN) NOT BODY k",
		"SEARCH RETURN (COUNT) $",
		"SEARCH CHARSET KOI8-R BODY " + lit("\xf3\xe9\xf3"),
		"SEARCH CHARSET X-NO-SUCH BODY a",
	}
	answer := func(workers int32, cmd string) string {
		t.Helper()
		d.srv.searchWorkers.Store(workers)
		u, tagged := w.run(cmd)
		_, rest, _ := strings.Cut(tagged, " ")
		return esearchTag.ReplaceAllString(strings.Join(u, ""), "(TAG)") + "| " + rest
	}
	pooled := d.srv.searchPooled.Load()
	for _, cmd := range cmds {
		serial := answer(-1, cmd)
		for _, n := range []int32{1, 3} {
			if got := answer(n, cmd); got != serial {
				t.Errorf("%q: with %d workers %q, on the connection's goroutine %q", cmd, n, got, serial)
			}
		}
		t.Logf("%q: %q", cmd, serial)
	}
	if d.srv.searchPooled.Load() == pooled {
		t.Fatal("no message was handed to a worker")
	}
}

// TestSearchPoolExpungedMeanwhile expunges, on another connection, every
// message a SEARCH's workers hold or wait for, and deletes the mailbox,
// while they hold them: the SEARCH answers as of its start (the messages
// its connection still sees), the next command of the connection gets
// the EXPUNGEs, and the server's bound is whole again after, no worker
// left.
func TestSearchPoolExpungedMeanwhile(t *testing.T) {
	rg := newRig(t)
	d := rg.device("a")
	ms := outsideMessages()
	unindexed(t, rg, d, len(ms), func(i int) []byte { return []byte(ms[i]) })
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	d.srv.searchWorkers.Store(-1)
	var want string
	for _, r := range w.ok("SEARCH BODY e") {
		if strings.HasPrefix(r, "* SEARCH") {
			want = strings.TrimSpace(r)
		}
	}
	d.srv.searchWorkers.Store(2)
	entered, release := holdWorkers(t, d, 32)
	w.n++
	tag := fmt.Sprintf("t%d", w.n)
	w.send(tag + " SEARCH BODY e\r\n")
	for range 2 {
		select {
		case <-entered:
		case <-time.After(20 * time.Second):
			t.Fatal("no two workers took a message")
		}
	}
	other := loginWire(t, d.addr)
	other.ok("SELECT INBOX")
	other.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)")
	other.ok("EXPUNGE")
	other.ok("UNSELECT")
	other.ok("CREATE Other")
	other.ok("RENAME INBOX Other/Old") // INBOX's messages move; INBOX stays, empty
	release()
	var u []string
	var tagged string
	for i := 0; i < 1000; i++ {
		r := w.response()
		if strings.HasPrefix(r, tag+" ") {
			tagged = r
			break
		}
		u = append(u, r)
	}
	if !strings.HasPrefix(tagged, tag+" OK") {
		t.Fatalf("SEARCH while its messages were expunged: %q, untagged %q", tagged, u)
	}
	var search string
	for _, r := range u {
		if strings.HasPrefix(r, "* SEARCH") {
			search = strings.TrimSpace(r)
		}
	}
	if search != want || want == "" || want == "* SEARCH" {
		t.Errorf("SEARCH BODY e: %q (untagged %q), want %q: the messages as the connection saw them", search, u, want)
	}
	u = w.ok("NOOP")
	if n := countPrefix(u, "* ") - countPrefix(u, "* OK"); n < 8 {
		t.Errorf("NOOP after: %q, want the 8 EXPUNGEs", u)
	}
	d.srv.searchHook.Store(nil)
	poolIdle(t, d.srv)
}

// poolIdle waits until no SEARCH worker runs and the server's bound is
// whole (searchServerBytes free), and fails the test if that does not
// come within 5 s.
func poolIdle(t *testing.T, srv *Server) {
	t.Helper()
	left, whole := poolWorkers(), false
	for i := 0; i < 500; i++ {
		if left == 0 {
			if whole = srv.searchMem.TryAcquire(searchServerBytes); whole {
				srv.searchMem.Release(searchServerBytes)
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
		left = poolWorkers()
	}
	if left > 0 || !whole {
		t.Errorf("after the SEARCHes: %d workers still running, the server's bound whole: %v", left, whole)
	}
}

// TestSearchPoolClientsGone starts SEARCHes on six connections at once
// with their workers held, then closes four of the connections: the two
// left get their answers, and once the SEARCHes of those gone have run
// out no worker is left and the server's bound is whole again.
func TestSearchPoolClientsGone(t *testing.T) {
	rg := newRig(t)
	d := rg.device("a")
	unindexed(t, rg, d, 30, func(i int) []byte {
		return fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nsome body text %d, Straße\r\n", i, i)
	})
	d.srv.searchWorkers.Store(2)
	entered, release := holdWorkers(t, d, 256)
	var ws []*wire
	for i := range 6 {
		w := loginWire(t, d.addr)
		w.ok("SELECT INBOX")
		w.send(fmt.Sprintf("s%d SEARCH CHARSET UTF-8 BODY {%d}\r\n", i, len("STRAẞE")))
		if r := w.response(); !strings.HasPrefix(r, "+") {
			t.Fatalf("literal: %q", r)
		}
		w.send("STRAẞE\r\n")
		ws = append(ws, w)
	}
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("no worker took a message")
	}
	for _, w := range ws[2:] {
		w.c.Close()
	}
	release()
	for i, w := range ws[:2] {
		var got string
		for j := 0; j < 100; j++ {
			r := w.response()
			if strings.HasPrefix(r, "* SEARCH") {
				got = strings.TrimSpace(r)
			}
			if strings.HasPrefix(r, fmt.Sprintf("s%d ", i)) {
				break
			}
		}
		if n := len(strings.Fields(got)) - 2; n != 30 {
			t.Errorf("connection %d: %q, want all 30 messages", i, got)
		}
	}
	d.srv.searchHook.Store(nil)
	poolIdle(t, d.srv)
}

var esearchTag = regexp.MustCompile(`\(TAG "[^"]*"\)`)

func countPrefix(ss []string, p string) int {
	return len(slices.DeleteFunc(slices.Clone(ss), func(s string) bool { return !strings.HasPrefix(s, p) }))
}

// TestSearchPoolScanPanic makes the SEARCH's own goroutine panic after it
// handed messages to its workers: go-imap recovers the panic and ends the
// connection, and the workers end too, the server's bound whole. Before,
// they waited for more messages for good, GOMAXPROCS goroutines left for
// each such SEARCH until the daemon stopped. Not parallel: it counts the
// workers of every SEARCH of the process.
func TestSearchPoolScanPanic(t *testing.T) {
	rg := newRig(t)
	d := rg.device("a")
	unindexed(t, rg, d, 8, func(i int) []byte {
		return fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i)
	})
	d.srv.searchWorkers.Store(2)
	hook := func(uid uint32) {
		if uid == 5 {
			panic("a scan that breaks")
		}
	}
	d.srv.searchScanHook.Store(&hook)
	before := d.srv.searchPooled.Load()
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	if data, err := c.Search(&imap.SearchCriteria{Body: []string{"body"}}, nil).Wait(); err == nil {
		t.Fatalf("SEARCH whose scan panicked: %v, no error", data.AllSeqNums())
	}
	if n := d.srv.searchPooled.Load() - before; n < 2 {
		t.Fatalf("%d messages handed to the workers before the panic, want 4", n)
	}
	d.srv.searchScanHook.Store(nil)
	poolIdle(t, d.srv)
	c2 := d.client(nil)
	mustSelect(t, c2, "INBOX")
	data, err := c2.Search(&imap.SearchCriteria{Body: []string{"body"}}, nil).Wait()
	if err != nil || len(data.AllSeqNums()) != 8 {
		t.Fatalf("SEARCH on a new connection: %v, %v; want the 8 messages", data, err)
	}
}
