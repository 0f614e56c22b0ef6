package mailstore

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// BenchmarkAtRest measures what encryption at rest costs the store, on the
// same driver and the same work: applying 10,000 deliveries of ~10 KB in
// batches of 500 (each batch one fsynced transaction), then listing the
// ENVELOPE of all 10,000 messages, then applying 200 flag changes, one a
// transaction (as IMAP STORE makes them), for
//
//   - plaintext: no encryption;
//   - adiantum: the whole database through the Adiantum VFS (what devices
//     do);
//   - fields: the application-level alternative, modelled: the plaintext
//     store plus XChaCha20-Poly1305 over every value that level would
//     encrypt (each body, and an envelope and a structure of the sizes
//     stored, as they are stored; each envelope as it is read), timed in
//     the same loop. It leaves the
//     index, folder names, flags and the schema in the clear, which is
//     why it was not chosen (docs/SECURITY.md §9).
//
// It reports seconds for each phase, wall clock and the process's CPU
// (user and system: steadier than the wall clock on a shared machine), the
// file size, and the Go heap.
//
//	go test ./internal/mailstore -run - -bench AtRest -benchtime 3x
func BenchmarkAtRest(b *testing.B) {
	const n, batch, changes = 10000, 500, 200
	entries := deliverEntries(n)
	aead, err := chacha20poly1305.NewX(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	seal := func(p []byte) { aead.Seal(nil, nonce, p, nil) }
	// The stored envelope and structure of a benchMessage are about this
	// large (JSON).
	envelopeSized, structureSized := make([]byte, 420), make([]byte, 640)
	key := devicedb.Key{7}
	for _, mode := range []string{"plaintext", "adiantum", "fields"} {
		b.Run(mode, func(b *testing.B) {
			var apply, fetch, applyCPU, fetchCPU, change time.Duration
			var size int64
			for range b.N {
				path := filepath.Join(b.TempDir(), "mail.db")
				o := Options{Parser: mimeform.Parser{}}
				if mode == "adiantum" {
					o.Key = &key
				}
				s, err := OpenWith(path, o)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				var sealedEnv [][]byte
				c0 := cpuTime()
				t0 := time.Now()
				for i := 0; i < n; i += batch {
					part := entries[i : i+batch]
					if mode == "fields" {
						for _, e := range part {
							seal(e.Cmd.Body)
							sealedEnv = append(sealedEnv, aead.Seal(nil, nonce, envelopeSized, nil))
							seal(structureSized)
						}
					}
					if _, err := s.Apply(ctx, part, part[len(part)-1].Pos); err != nil {
						b.Fatal(err)
					}
				}
				apply += time.Since(t0)
				c1 := cpuTime()
				applyCPU += c1 - c0
				t1 := time.Now()
				count := 0
				err = s.Fetch(ctx, InboxID(), UIDSet{{Start: 1, Stop: 0}}, WantEnvelope, func(m *Message) error {
					if _, err := mimeform.DecodeEnvelope(m.Envelope); err != nil {
						return err
					}
					if mode == "fields" {
						if _, err := aead.Open(nil, nonce, sealedEnv[count], nil); err != nil {
							return err
						}
					}
					count++
					return nil
				})
				if err != nil || count != n {
					b.Fatalf("fetch: %d messages, %v", count, err)
				}
				fetch += time.Since(t1)
				fetchCPU += cpuTime() - c1
				// Small changes, one a transaction, as IMAP STORE makes
				// them.
				l := testLog{pos: entries[n-1].Pos}
				t2 := time.Now()
				for i := range changes {
					e := l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{entries[i*(n/changes)].ID}})
					if _, err := s.Apply(ctx, []Entry{e}, e.Pos); err != nil {
						b.Fatal(err)
					}
				}
				change += time.Since(t2)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				info, err := os.Stat(path)
				if err != nil {
					b.Fatal(err)
				}
				size = info.Size()
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(apply.Seconds()/float64(b.N), "apply-s")
			b.ReportMetric(fetch.Seconds()/float64(b.N), "fetch-s")
			b.ReportMetric(applyCPU.Seconds()/float64(b.N), "apply-cpu-s")
			b.ReportMetric(fetchCPU.Seconds()/float64(b.N), "fetch-cpu-s")
			b.ReportMetric(change.Seconds()*1000/float64(b.N*changes), "change-ms")
			b.ReportMetric(float64(size)/1e6, "file-MB")
			b.ReportMetric(float64(ms.HeapInuse)/1e6, "heap-MB")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
