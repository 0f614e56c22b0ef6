package mailstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// BenchmarkWarmFetch is the store's side of a warm FETCH 1:* of 10,000
// messages of ~10 KB as the IMAP session asks for it when it writes the
// responses itself (docs/IMAP.md, "Memory"), through FetchForms, and
// through Fetch for comparison: the envelope's stored form
// (ENVELOPE FLAGS), the structure's (BODYSTRUCTURE), the metadata alone
// (FLAGS, UID, RFC822.SIZE). The store is closed after the apply and
// opened again, as a daemon is restarted, and one untimed Fetch comes
// first: every timed one is warm. In plaintext and encrypted (Adiantum, as
// devices open it); the ratio of the two is the cost of encryption on the
// read.
//
//	go test ./internal/mailstore -run - -bench WarmFetch -benchtime 20x
func BenchmarkWarmFetch(b *testing.B) {
	const n = 10000
	entries := deliverEntries(n)
	key := devicedb.Key{7}
	for _, mode := range []string{"plaintext", "adiantum"} {
		path := filepath.Join(b.TempDir(), "mail.db")
		o := Options{Parser: mimeform.Parser{}}
		if mode == "adiantum" {
			o.Key = &key
		}
		s, err := OpenWith(path, o)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i += 500 {
			part := entries[i : i+500]
			if _, err := s.Apply(context.Background(), part, part[len(part)-1].Pos); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		for _, w := range []struct {
			name string
			want Want
		}{
			{"envelope", WantEnvelopeWire},
			{"structure", WantStructureWire},
			{"metadata", WantMetadataOnly},
		} {
			for _, api := range []string{"forms", "fetch"} {
				b.Run(mode+"/"+w.name+"/"+api, func(b *testing.B) {
					s, err := OpenWith(path, o)
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					all := UIDSet{{Start: 1, Stop: 0}}
					var size int
					fetch := func() {
						count := 0
						f := s.FetchForms
						if api == "fetch" {
							f = s.Fetch
						}
						err := f(context.Background(), InboxID(), all, w.want, func(m *Message) error {
							size += len(m.EnvelopeWire) + len(m.StructureWire) + len(m.Flags)
							count++
							return nil
						})
						if err != nil || count != n {
							b.Fatalf("Fetch: expected %d messages, got %d, %v", n, count, err)
						}
					}
					fetch()
					c0 := cpuTime()
					b.ResetTimer()
					for range b.N {
						fetch()
					}
					b.StopTimer()
					b.ReportMetric(float64((cpuTime()-c0)/time.Microsecond)/1000/float64(b.N), "cpu-ms/op")
					_ = size
				})
			}
		}
	}
}
