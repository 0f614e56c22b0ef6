package entry

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
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
