package mailstore

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
)

// benchMessage is a ~10 KB message with a realistic header, unique per i.
func benchMessage(i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\nTo: rcpt@example.org\r\nSubject: benchmark message %d\r\n", i, i%97, i)
	fmt.Fprintf(&b, "Date: Tue, 14 Nov 2023 10:00:00 +0000\r\nMessage-ID: <bench-%d@example.org>\r\nMIME-Version: 1.0\r\n", i)
	b.WriteString("Content-Type: multipart/alternative; boundary=bb\r\n\r\n--bb\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	line := strings.Repeat("lorem ipsum dolor sit amet ", 3) + "\r\n"
	for b.Len() < 6000 {
		b.WriteString(line)
	}
	b.WriteString("--bb\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>")
	for b.Len() < 10000 {
		b.WriteString(line)
	}
	b.WriteString("</p>\r\n--bb--\r\n")
	return []byte(b.String())
}

func deliverEntries(n int) []Entry {
	var l testLog
	out := make([]Entry, n)
	for i := range out {
		out[i] = l.spool(&command.Command{Kind: command.Deliver, Date: int64(1700000000000 + i), Body: benchMessage(i)})
	}
	return out
}

// BenchmarkApplyDeliver applies 10,000 deliveries of ~10 KB in batches of
// 500 per iteration, into a fresh store.
func BenchmarkApplyDeliver(b *testing.B) {
	const n, batch = 10000, 500
	entries := deliverEntries(n)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s := openTest(b)
		b.StartTimer()
		for i := 0; i < n; i += batch {
			part := entries[i : i+batch]
			if _, err := s.Apply(context.Background(), part, part[len(part)-1].Pos); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkFetchEnvelopeFlags lists ENVELOPE and FLAGS of 10,000 messages.
func BenchmarkFetchEnvelopeFlags(b *testing.B) {
	const n = 10000
	s := openTest(b)
	entries := deliverEntries(n)
	for i := 0; i < n; i += 500 {
		part := entries[i : i+500]
		if _, err := s.Apply(context.Background(), part, part[len(part)-1].Pos); err != nil {
			b.Fatal(err)
		}
	}
	all := imap.UIDSet{{Start: 1, Stop: 0}}
	b.ResetTimer()
	for range b.N {
		count := 0
		err := s.Fetch(context.Background(), InboxID(), all, WantEnvelope, func(m *Message) error {
			if m.Envelope.Subject == "" || m.Flags == nil {
				return fmt.Errorf("uid %d: missing envelope or flags", m.UID)
			}
			count++
			return nil
		})
		if err != nil || count != n {
			b.Fatalf("Fetch: expected %d messages, got %d, %v", n, count, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "messages/s")
}
