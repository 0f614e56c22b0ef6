package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"
)

// BenchmarkDeliverAPI: deliveries over the HTTP API as `cspool deliver
// --spool-server` makes them, signed with the spool key, one sealed entry
// of about 10 KB each, spread over alice and bob, from 8 clients at once
// (4 x GOMAXPROCS(2) on the test machine), on a real loopback listener,
// with the SQLite store and with PostgreSQL. Each request is signed and
// sent anew; the entry is sealed once, before the timer. cpu-ms/op is the
// process's CPU time (user and system) per delivery, client and server
// together.
func BenchmarkDeliverAPI(b *testing.B) {
	for _, store := range []string{"sqlite", "postgres"} {
		b.Run("store="+store, func(b *testing.B) {
			e := newEnv(b, false, func(c *Config) {
				c.SpoolKeyNonces = 1 << 22
				if store != "postgres" {
					return
				}
				pg, err := pgstore.Open(context.Background(), pgtest.Database(b), pgstore.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { pg.Close() })
				c.Store = pg
			})
			users := []string{"alice", "bob"}
			sealed := make([][]byte, len(users))
			body := []byte("Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef", 640))
			for i, u := range users {
				k, err := e.users.Lookup(context.Background(), u)
				if err != nil {
					b.Fatal(err)
				}
				sealed[i], _, err = entry.Seal(&command.Command{Kind: command.Deliver, Date: 1, Body: body}, e.spoolK, k, u, nil)
				if err != nil {
					b.Fatal(err)
				}
			}
			c, err := NewClient(e.srv.URL, "", e.spoolK, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}})
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetBytes(int64(len(sealed[0])))
			b.SetParallelism(4)
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1)) % len(users)
					if _, err := c.Append(context.Background(), users[i], [][]byte{sealed[i]}); err != nil {
						b.Error(fmt.Errorf("delivery to %s: %w", users[i], err))
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(processCPU(b)-cpu0)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}
