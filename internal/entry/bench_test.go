package entry

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/keys"
)

var benchSizes = []int{1 << 10, 100 << 10, 1 << 20, 10 << 20}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkAEAD is the baseline: ChaCha20-Poly1305 sealing and opening the
// same bytes with no envelope.
func BenchmarkAEAD(b *testing.B) {
	key := make([]byte, 32)
	aead, _ := chacha20poly1305.New(key)
	nonce := make([]byte, 12)
	for _, n := range benchSizes {
		msg := make([]byte, n)
		rand.Read(msg)
		out := make([]byte, 0, n+16)
		b.Run("seal/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				out = aead.Seal(out[:0], nonce, msg, nil)
			}
		})
		ct := aead.Seal(nil, nonce, msg, nil)
		b.Run("open/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := aead.Open(out[:0], nonce, ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEntry measures Seal and Open (HPKE key setup, signature, padding,
// encoding) on the same sizes as BenchmarkAEAD.
func BenchmarkEntry(b *testing.B) {
	f := newFixture(b)
	for _, n := range benchSizes {
		msg := make([]byte, n)
		rand.Read(msg)
		c := &command.Command{Kind: command.Deliver, Date: 1, Body: msg}
		// Like the AEAD baseline, seal reuses its output buffer;
		// seal-alloc is Seal with a fresh one each time.
		b.Run("seal/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			var sealed []byte
			for b.Loop() {
				sealed, _, _ = AppendSeal(sealed[:0], c, f.spool, f.user.Public(), "alice", nil)
			}
			b.ReportMetric(float64(len(sealed)-n), "overhead-bytes")
		})
		b.Run("seal-alloc/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				Seal(c, f.spool, f.user.Public(), "alice", nil)
			}
		})
		sealed, _, _ := Seal(c, f.spool, f.user.Public(), "alice", nil)
		b.Run("open/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Open(sealed, f.user, "alice", f.user.Public(), f.spool.Public()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// peakHeap runs fn while sampling the heap and returns the peak growth over
// the heap in use before it started.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var max uint64
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > max {
				max = ms.HeapAlloc - base
			}
			select {
			case <-done:
				peak <- max
				return
			default:
			}
		}
	}()
	fn()
	runtime.ReadMemStats(&ms)
	close(done)
	return <-peak
}

// BenchmarkPeakHeap50MB reports the peak extra heap while sealing and
// opening a 50 MB message, as a multiple of the message size.
func BenchmarkPeakHeap50MB(b *testing.B) {
	f := newFixture(b)
	const n = 50 << 20
	msg := make([]byte, n)
	rand.Read(msg)
	c := &command.Command{Kind: command.Deliver, Date: 1, Body: msg}
	var sealed []byte
	b.Run("seal", func(b *testing.B) {
		var peak uint64
		for b.Loop() {
			sealed = nil
			p := peakHeap(func() { sealed, _, _ = Seal(c, f.spool, f.user.Public(), "alice", nil) })
			peak = max(peak, p)
		}
		b.ReportMetric(float64(peak)/n, "peak-heap/msg")
	})
	b.Run("open", func(b *testing.B) {
		var peak uint64
		for b.Loop() {
			var o *Opened
			p := peakHeap(func() { o, _ = Open(sealed, f.user, "alice", f.spool.Public()) })
			if o == nil {
				b.Fatal("open failed")
			}
			peak = max(peak, p)
		}
		b.ReportMetric(float64(peak)/n, "peak-heap/msg")
	})
}

// BenchmarkPublicKeyOps measures the public-key operations every entry
// needs whatever its size: sealing makes an ephemeral X25519 key, one X25519
// agreement and one Ed25519 signature; opening one agreement and one
// verification. Their sum is the floor of the per-entry fixed cost.
func BenchmarkPublicKeyOps(b *testing.B) {
	eph, _ := ecdh.X25519().GenerateKey(rand.Reader)
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 32)
	sig := ed25519.Sign(priv, msg)
	b.Run("x25519-keygen", func(b *testing.B) {
		for b.Loop() {
			ecdh.X25519().GenerateKey(rand.Reader)
		}
	})
	b.Run("x25519-agree", func(b *testing.B) {
		for b.Loop() {
			eph.ECDH(peer.PublicKey())
		}
	})
	b.Run("ed25519-sign", func(b *testing.B) {
		for b.Loop() {
			ed25519.Sign(priv, msg)
		}
	})
	b.Run("ed25519-verify", func(b *testing.B) {
		for b.Loop() {
			ed25519.Verify(pub, msg, sig)
		}
	})
}

// padTally adds up the sizes of sealed entries: as written (padded), with
// no padding, and as Padmé alone would have padded them (the rule for every
// kind before the buckets).
type padTally struct {
	n, padded, unpadded, padme int
}

func (t *padTally) add(b testing.TB, c *command.Command, author *keys.SecretKey, to keys.PublicKey) {
	p, _, err := Seal(c, author, to, "alice", nil)
	if err != nil {
		b.Fatal(err)
	}
	u, _, err := Seal(c, author, to, "alice", &Options{NoPadding: true})
	if err != nil {
		b.Fatal(err)
	}
	inner, ok := innerSize(uint64(len(u) - headerSize))
	if !ok {
		b.Fatalf("unpadded %s entry of %d bytes has no inner length", c.Kind, len(u))
	}
	t.n++
	t.padded += len(p)
	t.unpadded += len(u)
	t.padme += SealedLen(Padme(inner))
}

// BenchmarkPaddingShare seals a realistic mix for real and reports what the
// padding costs the spool: each message delivered, then ten flag changes
// of that one message, as a device writes them (with the head it had
// applied). Two mixes: 10 KB messages, the size bench/seed writes, and the
// sample messages of testdata/messages (37 bytes to 3.3 KB). Then one large
// batch, SetFlags over 10,000 messages. The figures are sizes, not times:
// run it with -benchtime 1x.
func BenchmarkPaddingShare(b *testing.B) {
	f := newFixture(b)
	names, err := filepath.Glob(filepath.Join("..", "..", "testdata", "messages", "*"))
	if err != nil || len(names) == 0 {
		b.Fatalf("no sample messages: %v", err)
	}
	var samples [][]byte
	for _, n := range names {
		m, err := os.ReadFile(n)
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, m)
	}
	tenKB := make([][]byte, 200)
	for i := range tenKB {
		m := fmt.Appendf(nil, "From: Sender %d <sender%d@example.org>\r\nTo: alice@example.org\r\nSubject: message %d\r\n\r\n", i, i, i)
		for len(m) < 10<<10 {
			m = append(m, "quarterly report meeting invoice travel token mail spool\r\n"...)
		}
		tenKB[i] = m
	}
	flagChanges := []struct {
		kind command.Kind
		flag string
	}{
		{command.SetFlags, `\Seen`}, {command.SetFlags, `\Flagged`}, {command.ClearFlags, `\Flagged`},
		{command.SetFlags, `\Answered`}, {command.SetFlags, "$Label1"}, {command.ClearFlags, `\Seen`},
		{command.SetFlags, `\Seen`}, {command.ClearFlags, "$Label1"}, {command.SetFlags, "Junk"}, {command.ClearFlags, "Junk"},
	}
	for _, mix := range []struct {
		name   string
		bodies [][]byte
	}{{"10KB", tenKB}, {"samples", samples}} {
		b.Run(mix.name, func(b *testing.B) {
			var dlv, cmd padTally
			for b.Loop() {
				dlv, cmd = padTally{}, padTally{}
				pos := uint64(0)
				for _, body := range mix.bodies {
					_, id, err := Seal(deliver(body), f.spool, f.user.Public(), "alice", nil)
					if err != nil {
						b.Fatal(err)
					}
					dlv.add(b, deliver(body), f.spool, f.user.Public())
					pos++
					for _, fc := range flagChanges {
						c := &command.Command{Kind: fc.kind, Flags: []string{fc.flag}, IDs: []command.ID{id},
							Seen: &command.Head{Pos: pos, Hash: make([]byte, 32)}}
						cmd.add(b, c, f.user, f.user.Public())
						pos++
					}
				}
			}
			all := padTally{padded: dlv.padded + cmd.padded, unpadded: dlv.unpadded + cmd.unpadded, padme: dlv.padme + cmd.padme}
			perEntry := func(t padTally, v int) float64 { return float64(v) / float64(t.n) }
			share := func(padded, unpadded int) float64 { return 100 * float64(padded-unpadded) / float64(padded) }
			b.ReportMetric(perEntry(cmd, cmd.unpadded), "cmd-unpadded-B")
			b.ReportMetric(perEntry(cmd, cmd.padme), "cmd-padme-B")
			b.ReportMetric(perEntry(cmd, cmd.padded), "cmd-B")
			b.ReportMetric(perEntry(dlv, dlv.unpadded), "dlv-unpadded-B")
			b.ReportMetric(perEntry(dlv, dlv.padme), "dlv-padme-B")
			b.ReportMetric(perEntry(dlv, dlv.padded), "dlv-B")
			b.ReportMetric(share(all.padded, all.unpadded), "pad-%-of-spool")
			b.ReportMetric(share(all.padme, all.unpadded), "padme-only-pad-%")
			b.ReportMetric(float64(all.padded)/float64(all.padme), "spool-x-padme-only")
			b.ReportMetric(share(dlv.padded, dlv.unpadded), "pad-%-deliveries-only")
		})
	}
	// One large batch: a STORE over a 10,000-message mailbox.
	b.Run("setflags-10000", func(b *testing.B) {
		var t padTally
		for b.Loop() {
			t = padTally{}
			t.add(b, deviceCommand(command.SetFlags, 10000), f.user, f.user.Public())
		}
		b.ReportMetric(float64(t.unpadded), "unpadded-B")
		b.ReportMetric(float64(t.padme), "padme-B")
		b.ReportMetric(float64(t.padded), "B")
	})
}

// BenchmarkMail10KB seals a delivery of 10 KB (with its trace fields, as
// the LMTP listener does) into a reused buffer, and opens it, alone and in
// a batch of 64: the size of most mail, sealed and opened on one
// goroutine.
func BenchmarkMail10KB(b *testing.B) {
	f := newFixture(b)
	msg := make([]byte, 10<<10)
	rand.Read(msg)
	c := &command.Command{Kind: command.Deliver, Date: 1, Body: msg}
	o := &Options{BodyPrefix: []byte("Return-Path: <a@example.org>\r\nDelivered-To: b@example.org\r\n")}
	var sealed []byte
	b.Run("seal", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			sealed, _, _ = AppendSeal(sealed[:0], c, f.spool, f.user.Public(), "alice", o)
		}
	})
	b.Run("open", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Open(sealed, f.user, "alice", f.user.Public(), f.spool.Public()); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Version 3: a step of one chain each (the context made once), and
	// opened as a device reads a run of them, each step once.
	ch := NewChains(0)
	var chained [][]byte
	b.Run("seal-v3", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		o3 := *o
		o3.Chains = ch
		var e []byte
		for b.Loop() {
			e, _, _ = AppendSeal(e[:0], c, f.spool, f.user.Public(), "alice", &o3)
		}
		for range 1000 {
			e, _, _ := AppendSeal(nil, c, f.spool, f.user.Public(), "alice", &o3)
			chained = append(chained, e)
		}
	})
	b.Run("open-v3", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := Open(chained[i%len(chained)], f.user, "alice", f.user.Public(), f.spool.Public()); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	// As a device opens a read: 64 entries, their signatures checked in
	// one batch; the time is an entry's.
	b.Run("open-batch-64", func(b *testing.B) {
		us := make([]*Unverified, 64)
		b.SetBytes(int64(len(us) * len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			for i := range us {
				u, err := OpenUnverified(sealed, f.user, "alice", f.user.Public(), f.spool.Public())
				if err != nil {
					b.Fatal(err)
				}
				us[i] = u
			}
			if _, errs := VerifyBatch(us); errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(us)), "ns/entry")
	})
}

// BenchmarkChainKeys derives the keys of a context's 1,024 entries as a
// device's read opens them: in order on one goroutine, and by two workers
// each taking the next 64 (the syncer's openAll on two cores). The time is
// an entry's, the context's one agreement included.
func BenchmarkChainKeys(b *testing.B) {
	f := newFixture(b)
	entries, _ := sealChained(b, f, NewChains(0), MaxChainSteps, 10)
	run := func(b *testing.B, workers int) {
		for b.Loop() {
			forgetOpenChains()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for {
						from := int(next.Add(64)) - 64
						if from >= len(entries) {
							return
						}
						for _, e := range entries[from:min(from+64, len(entries))] {
							if _, err := chainAEAD(e[:header3Size], f.user); err != nil {
								b.Error(err)
								return
							}
						}
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/entry")
	}
	b.Run("in-order", func(b *testing.B) { run(b, 1) })
	b.Run("two-workers", func(b *testing.B) { run(b, 2) })
}
