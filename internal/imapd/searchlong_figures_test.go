package imapd

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// wordsText is about n bytes of words drawn at random from a vocabulary
// of 5,000 made-up words, in lines of about 70: text that compresses
// about as ordinary prose does (to about a third).
func wordsText(r *rand.Rand, n int) string {
	vocab := make([]string, 5000)
	for i := range vocab {
		w := make([]byte, 2+r.IntN(9))
		for j := range w {
			w[j] = byte('a' + r.IntN(26))
		}
		vocab[i] = string(w)
	}
	var b strings.Builder
	line := 0
	for b.Len() < n {
		w := vocab[r.IntN(len(vocab))]
		b.WriteString(w)
		line += len(w) + 1
		if line > 70 {
			b.WriteString("\r\n")
			line = 0
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// TestSearchLongBodiesFigures measures SEARCH TEXT over a mailbox of five
// messages of 20 MB of text each (too long for the index: the first two
// plain, the others a base64 text part), beside ten short ones: the time
// the indexer's transaction held the writer for them, and the time and
// the bytes allocated of ten SEARCH TEXT through the real server.
// Figures only (docs/BENCHMARKS.md, "SEARCH of messages with more than 1
// MiB of text"); run with CSPOOL_LONG_SEARCH_FIGURES=1.
//
//	CSPOOL_LONG_SEARCH_FIGURES=1 go test ./internal/imapd -run TestSearchLongBodiesFigures -v
func TestSearchLongBodiesFigures(t *testing.T) {
	if os.Getenv("CSPOOL_LONG_SEARCH_FIGURES") != "1" {
		t.Skip("figures only: CSPOOL_LONG_SEARCH_FIGURES=1")
	}
	rg := newRig(t)
	d := rg.device("a")
	r := rand.New(rand.NewPCG(20, 5))
	const size = 20 << 20
	var last uint64
	for i := 0; i < 5; i++ {
		text := wordsText(r, size-100) + fmt.Sprintf(" endword%d ", i) + wordsText(r, 100)
		if i < 2 {
			last = rg.Deliver([]byte("From: a@example.org\r\nSubject: long\r\n\r\n" + text))
			continue
		}
		b64 := base64.StdEncoding.EncodeToString([]byte(text[size-(16<<20)+4096:]))
		var w strings.Builder
		for len(b64) > 76 {
			w.WriteString(b64[:76] + "\r\n")
			b64 = b64[76:]
		}
		w.WriteString(b64 + "\r\n")
		last = rg.Deliver([]byte("From: b@example.org\r\nSubject: long\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + w.String()))
	}
	for i := 0; i < 10; i++ {
		last = rg.Deliver([]byte(fmt.Sprintf("From: c@example.org\r\nSubject: short %d\r\n\r\nshort mail %d\r\n", i, i)))
	}
	d.synced(last)
	ctx := context.Background()
	longest := time.Duration(0)
	for {
		t0 := time.Now()
		n, more, err := d.store.IndexPendingWithin(ctx, 1000, 150*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		longest = max(longest, took)
		t.Logf("index transaction: %d bodies, %v", n, took.Round(time.Millisecond))
		if !more {
			break
		}
	}
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	for _, needle := range []string{"endword3", "nowhere-at-all"} {
		crit := imap.SearchCriteria{Text: []string{needle}}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		alloc := ms.TotalAlloc
		t0 := time.Now()
		var got []uint32
		for i := 0; i < 10; i++ {
			data, err := c.Search(&crit, nil).Wait()
			if err != nil {
				t.Fatal(err)
			}
			got = data.AllSeqNums()
		}
		took := time.Since(t0)
		runtime.ReadMemStats(&ms)
		t.Logf("10 x SEARCH TEXT %s: %v (%v each), %d MB allocated, answer %v; longest index transaction %v",
			needle, took.Round(time.Millisecond), (took / 10).Round(time.Millisecond), (ms.TotalAlloc-alloc)>>20, got, longest.Round(time.Millisecond))
	}
}
