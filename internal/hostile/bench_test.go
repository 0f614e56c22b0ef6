package hostile

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/spool"
)

// BenchmarkIntegrityCost syncs a new device over the real API (straight to
// the server, not through the proxy) from a log of 5,000 delivered 2 KB
// messages, once with the tamper-evidence checks and once with
// syncer.Config.DisableIntegrity, alternating in each iteration; it reports
// both times and the checks' overhead in percent.
//
//	go test ./internal/hostile -run - -bench IntegrityCost -benchtime 5x
func BenchmarkIntegrityCost(b *testing.B) {
	const n, size = 5000, 2 << 10
	r := newRig(b)
	pad := bytes.Repeat([]byte("lorem ipsum dolor sit amet consectetur adipiscing elit\r\n"), size/56)
	var batch [][]byte
	for i := range n {
		body := append(message(i), pad...)
		batch = append(batch, r.seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: body}))
		if len(batch) == 500 {
			if _, err := r.spool.Append(context.Background(), user, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	var checked, unchecked time.Duration
	syncNew := func(name string, noChecks bool) time.Duration {
		d := r.deviceAt(name, r.upstream, noChecks)
		start := time.Now()
		d.mustSync(b)
		took := time.Since(start)
		if p := d.position(b); p != n {
			b.Fatalf("device %s at %d: want %d", name, p, n)
		}
		return took
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			checked += syncNew(fmt.Sprintf("c%d", i), false)
			unchecked += syncNew(fmt.Sprintf("u%d", i), true)
		} else {
			unchecked += syncNew(fmt.Sprintf("u%d", i), true)
			checked += syncNew(fmt.Sprintf("c%d", i), false)
		}
	}
	b.ReportMetric(checked.Seconds()/float64(b.N), "checked-s/sync")
	b.ReportMetric(unchecked.Seconds()/float64(b.N), "unchecked-s/sync")
	b.ReportMetric(100*(checked.Seconds()/unchecked.Seconds()-1), "overhead-%")
}

// BenchmarkChainPerEntry is the CPU the chain check adds per 2 KB entry
// (one spool.ChainNext), free of the disk and network noise of the sync.
func BenchmarkChainPerEntry(b *testing.B) {
	data := bytes.Repeat([]byte{'x'}, 2<<10+300)
	var h spool.Hash
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		h = spool.ChainNext(h, data)
	}
	_ = h
}
