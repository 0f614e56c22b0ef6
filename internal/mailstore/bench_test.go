package mailstore

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
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
	all := UIDSet{{Start: 1, Stop: 0}}
	b.ResetTimer()
	for range b.N {
		count := 0
		err := s.Fetch(context.Background(), InboxID(), all, WantEnvelope, func(m *Message) error {
			env, err := mimeform.DecodeEnvelope(m.Envelope)
			if err != nil {
				return err
			}
			if env.Subject == "" || m.Flags == nil {
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

// BenchmarkRestoreCheck is what check 9 of docs/SECURITY.md costs: a
// device that applied 5,000 deliveries of ~10 KB rebuilds from a checkpoint
// at 5,500 that covers them. Each iteration restores a fresh copy of the
// device's database (the copy is not timed); besides the whole Restore, the
// check (checkHistory, every applied entry and held message compared with
// the checkpoint) is timed alone on the same data.
func BenchmarkRestoreCheck(b *testing.B) {
	const n, more = 5000, 500
	ctx := context.Background()
	entries := deliverEntries(n + more)
	writer := openTest(b)
	dev, err := Open(filepath.Join(b.TempDir(), "device.db"), mimeform.Parser{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n+more; i += 500 {
		part := entries[i : i+500]
		for _, s := range []*Store{writer, dev} {
			if s == dev && i >= n {
				continue
			}
			if _, err := s.Apply(ctx, part, part[len(part)-1].Pos); err != nil {
				b.Fatal(err)
			}
		}
	}
	sn, err := writer.Snapshot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	kept := bodiesOf(entries)
	if err := dev.Close(); err != nil {
		b.Fatal(err)
	}
	orig, err := os.ReadFile(dev.Path())
	if err != nil {
		b.Fatal(err)
	}
	var check time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "copy.db")
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			b.Fatal(err)
		}
		s, err := Open(path, mimeform.Parser{})
		if err != nil {
			b.Fatal(err)
		}
		tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		r := &restorer{ctx: ctx, tx: tx, sn: sn}
		if err := r.readOld(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := r.checkHistory(n, newMapLookup(sn, r.oldMessages)); err != nil {
			b.Fatal(err)
		}
		check += time.Since(start)
		tx.Rollback()
		b.StartTimer()
		asked := 0
		if _, err := s.Restore(ctx, sn, fetchFrom(kept, &asked)); err != nil || asked != more {
			b.Fatalf("restore: %v, %d bodies fetched: want %d", err, asked, more)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(check.Milliseconds())/float64(b.N), "check-ms/op")
	b.ReportMetric(100*check.Seconds()/b.Elapsed().Seconds(), "check-%")
}

// BenchmarkTakeBack: a store of 1,000 deliveries of ~10 KB with 150
// changes queued (50 flag changes, 50 appends of ~10 KB, 50 expunges);
// each iteration applies another delivery from the log, which takes the
// queue back and applies it again on top (queue.go).
func BenchmarkTakeBack(b *testing.B) {
	const n, k = 1000, 50
	ctx := context.Background()
	s := openTest(b)
	var l testLog
	for i := 0; i < n; i += 500 {
		var batch []Entry
		for j := i; j < i+500; j++ {
			batch = append(batch, l.spool(&command.Command{Kind: command.Deliver, Date: int64(1700000000000 + j), Body: benchMessage(j)}))
		}
		mustApply(b, s, batch...)
	}
	inbox := InboxID()
	for i := range k {
		for j, c := range []*command.Command{
			{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{entryID(uint64(1 + i))}},
			{Kind: command.Append, Mailbox: "INBOX", MailboxID: inbox, Date: int64(1700000000000 + n + i), Body: benchMessage(n + i)},
			{Kind: command.Expunge, IDs: []command.ID{entryID(uint64(1 + k + i))}},
		} {
			if _, err := s.Enqueue(ctx, entryID(uint64(1_000_000+3*i+j)), c); err != nil {
				b.Fatal(err)
			}
		}
	}
	var records int
	if err := s.rdb.QueryRow("SELECT count(*) FROM undo").Scan(&records); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		mustApply(b, s, l.spool(&command.Command{Kind: command.Deliver, Date: int64(1800000000000 + i), Body: benchMessage(n + k + i)}))
	}
	b.ReportMetric(float64(records), "undo-records")
}

// BenchmarkFirstSyncApply applies 10,000 deliveries of ~10 KB as a device's
// first sync does: into a new encrypted store, each entry prepared before
// (Prepare), in batches of 200 (a read of 2 MiB) with their chain hashes.
// It reports the writer's CPU a sync (the store's goroutines alone: no
// other work runs in the process).
//
//	go test ./internal/mailstore -run - -bench FirstSyncApply -benchtime 3x -cpuprofile cpu.prof
func BenchmarkFirstSyncApply(b *testing.B) {
	const n, batch = 10000, 200
	entries := deliverEntries(n)
	var p Store
	p.parser = mimeform.Parser{}
	for i := range entries {
		entries[i].Prepared = p.Prepare(entries[i].Cmd)
	}
	hashes := make([]chain.Hash, n)
	for i := range hashes {
		hashes[i][0], hashes[i][1] = byte(i), byte(i>>8)
	}
	key := devicedb.Key{7}
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s, err := OpenWith(filepath.Join(b.TempDir(), "mail.db"), Options{Parser: mimeform.Parser{}, Key: &key})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := cpuTime()
		for i := 0; i < n; i += batch {
			part := entries[i : i+batch]
			if _, err := s.ApplyChained(context.Background(), part, nil, part[len(part)-1].Pos, hashes[i:i+batch]); err != nil {
				b.Fatal(err)
			}
		}
		cpu += cpuTime() - c0
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/sync")
}
