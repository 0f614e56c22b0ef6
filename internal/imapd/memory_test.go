package imapd

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/testproc"
)

// TestLargeMailbox selects a large INBOX, fetches and searches all of it,
// and reports the heap and RSS. CSPOOL_BIG=1 uses 100,000 messages (the
// daemon's budget is 150 MB RSS); the default is 5,000. A heavy test: it
// runs with CSPOOL_HEAVY=1 (CI sets it) or CSPOOL_BIG=1.
func TestLargeMailbox(t *testing.T) {
	if testing.Short() {
		t.Skip("large mailbox test skipped in -short mode")
	}
	n := 5000
	if os.Getenv("CSPOOL_BIG") == "1" {
		n = 100000
	} else {
		testproc.NeedHeavy(t)
	}
	r := newRig(t)
	d := r.device("a")
	// Fill the store directly, in batches, as the sync loop would, and tell
	// the server what each batch changed, as the sync loop does (the
	// server keeps INBOX's UID list loaded from its start).
	ctx := context.Background()
	pos, err := d.store.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < n; {
		var batch []mailstore.Entry
		for ; i < n && len(batch) < 1000; i++ {
			pos++
			var id command.ID
			rand.Read(id[:])
			body := fmt.Sprintf("From: sender%d@example.org\r\nSubject: message %d\r\nDate: Mon, 24 Nov 2025 09:30:00 +0100\r\n\r\n%s body %d\r\n",
				i%100, i, strings.Repeat("lorem ipsum ", 40), i)
			batch = append(batch, mailstore.Entry{Pos: pos, ID: id, Author: mailstore.AuthorSpool,
				Cmd: &command.Command{Kind: command.Deliver, Date: 1764000000000 + int64(i), Body: []byte(body)}})
		}
		res, err := d.store.Apply(ctx, batch, pos)
		if err != nil {
			t.Fatal(err)
		}
		d.srv.Applied(res)
	}
	t.Logf("filled %d messages in %v", n, time.Since(start))
	c := d.client(nil)
	start = time.Now()
	sel := mustSelect(t, c, "INBOX")
	if sel.NumMessages != uint32(n) {
		t.Fatalf("SELECT: %d messages, want %d", sel.NumMessages, n)
	}
	t.Logf("SELECT of %d messages: %v", n, time.Since(start))
	start = time.Now()
	cmd := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, Envelope: true})
	count := 0
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		count++
	}
	if err := cmd.Close(); err != nil || count != n {
		t.Fatalf("FETCH 1:* streamed %d messages, %v", count, err)
	}
	t.Logf("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE): %v", time.Since(start))
	start = time.Now()
	data, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "sender7@"}}}, nil).Wait()
	if err != nil || len(data.AllSeqNums()) != n/100 {
		t.Fatalf("SEARCH FROM: %d results, %v", len(data.AllSeqNums()), err)
	}
	t.Logf("SEARCH HEADER From: %v", time.Since(start))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("after SELECT, FETCH and SEARCH of %d messages: heap in use %.1f MB, RSS %s", n,
		float64(ms.HeapInuse)/(1<<20), rss())
	if ms.HeapInuse > 150<<20 {
		t.Errorf("heap in use %d bytes, over the 150 MB budget", ms.HeapInuse)
	}
}

// rss returns the process's resident set size from /proc, or "unknown".
func rss() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				if kb, err := strconv.Atoi(f[1]); err == nil {
					return fmt.Sprintf("%.1f MB", float64(kb)/1024)
				}
			}
		}
	}
	return "unknown"
}
