package mimeform

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchMessage is a message like bench/seed's: real headers and a text
// body of about size bytes.
func benchMessage(i, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\n", i%97, i%97)
	b.WriteString("To: alice@example.org\r\n")
	fmt.Fprintf(&b, "Subject: Benchmark message %d about topic %d\r\n", i, i%1000)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Unix(1764000000+int64(i)*60, 0).UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <bench-%d@example.org>\r\n", i)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	words := []string{"mail", "spool", "log", "device", "sync", "quarterly", "report", "meeting", "invoice", "travel", "token"}
	for line := 1; b.Len() < size; line++ {
		b.WriteString(words[(i+line*7)%len(words)])
		if line%12 == 0 {
			b.WriteString("\r\n")
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// BenchmarkParse is the per-entry parse of a first sync: Parse and the
// IMAP forms of what it stores, on a 10 KB message.
func BenchmarkParse(b *testing.B) {
	msg := benchMessage(7, 10<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := Parse(msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := Forms(m.Envelope, m.Structure); err != nil {
			b.Fatal(err)
		}
	}
}
