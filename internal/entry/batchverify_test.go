package entry

import (
	"bytes"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/sha512"
	"fmt"
	"math/rand/v2"
	"testing"

	"filippo.io/edwards25519"
	"github.com/hdevalence/ed25519consensus"
)

// signed is one (author, digest, signature) to check.
type signed struct {
	name             string
	author, dig, sig []byte
}

// torsionSigned signs dig with seed so that R has a component of order 2:
// ZIP 215's cofactored equation accepts it, RFC 8032's cofactorless one
// does not. R = [r]B + T, T of order 2; s = r + k·a: [8]([s]B - R - [k]A)
// is [8](-T), the identity, but [s]B - [k]A is not R.
func torsionSigned(t testing.TB, seed, dig []byte) []byte {
	t.Helper()
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	h := sha512.Sum512(seed)
	a, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		t.Fatal(err)
	}
	var wide [64]byte
	crand.Read(wide[:])
	r, _ := edwards25519.NewScalar().SetUniformBytes(wide[:])
	torsion, err := new(edwards25519.Point).SetBytes(append([]byte{0xec}, append(bytes.Repeat([]byte{0xff}, 30), 0x7f)...))
	if err != nil {
		t.Fatal(err)
	}
	R := new(edwards25519.Point).Add(new(edwards25519.Point).ScalarBaseMult(r), torsion)
	kh := sha512.New()
	kh.Write(R.Bytes())
	kh.Write(pub)
	kh.Write(dig)
	k, _ := edwards25519.NewScalar().SetUniformBytes(kh.Sum(nil))
	return append(R.Bytes(), edwards25519.NewScalar().MultiplyAdd(k, a, r).Bytes()...)
}

// The batch equation with one term an author answers as the library's
// batch and as each signature checked alone, whatever the mix of authors
// and whatever is wrong with one signature of the batch: a bad signature
// by the author of every other one (whose terms are summed), a signature
// by one key that names another, a scalar that is not canonical, an R or
// a key that is no point, lengths that are wrong. A signature with a
// torsion component, which ZIP 215 accepts, is accepted in a batch too.
func TestBatchEquationAsLibrary(t *testing.T) {
	seeds := make([][]byte, 3)
	pubs := make([]ed25519.PublicKey, 3)
	privs := make([]ed25519.PrivateKey, 3)
	for i := range seeds {
		seeds[i] = make([]byte, ed25519.SeedSize)
		crand.Read(seeds[i])
		privs[i] = ed25519.NewKeyFromSeed(seeds[i])
		pubs[i] = privs[i].Public().(ed25519.PublicKey)
	}
	good := func(i, n int) signed {
		dig := sha512.Sum512_256(fmt.Appendf(nil, "entry %d by %d", n, i))
		return signed{fmt.Sprintf("good %d", n), pubs[i], dig[:], ed25519.Sign(privs[i], dig[:])}
	}
	notPoint := bytes.Repeat([]byte{0xff}, 32)
	notPoint[0] = 0x02 // y = 2 (mod p) is no point's y
	if _, err := new(edwards25519.Point).SetBytes(notPoint); err == nil {
		t.Fatal("the test's non-point decodes")
	}
	bads := []func(n int) signed{
		func(n int) signed { // a flipped bit in s, by the main author
			s := good(0, n)
			s.sig = bytes.Clone(s.sig)
			s.sig[40] ^= 1
			s.name = "flipped s"
			return s
		},
		func(n int) signed { // another digest than signed
			s := good(0, n)
			s.dig = bytes.Clone(s.dig)
			s.dig[0] ^= 1
			s.name = "other digest"
			return s
		},
		func(n int) signed { // signed by key 1, naming key 0
			s := good(1, n)
			s.author = pubs[0]
			s.name = "other key"
			return s
		},
		func(n int) signed { // s + the group order: not canonical
			s := good(0, n)
			s.sig = bytes.Clone(s.sig)
			l := []byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
			carry := 0
			for i := range 32 {
				v := int(s.sig[32+i]) + int(l[i]) + carry
				s.sig[32+i], carry = byte(v), v>>8
			}
			s.name = "s not canonical"
			return s
		},
		func(n int) signed {
			s := good(0, n)
			s.sig = append(bytes.Clone(notPoint), s.sig[32:]...)
			s.name = "R no point"
			return s
		},
		func(n int) signed {
			s := good(2, n)
			s.author = notPoint
			s.name = "key no point"
			return s
		},
		func(n int) signed {
			s := good(0, n)
			s.sig = s.sig[:63]
			s.name = "short signature"
			return s
		},
		func(n int) signed {
			s := good(0, n)
			s.author = s.author[:31]
			s.name = "short key"
			return s
		},
	}
	r := rand.New(rand.NewPCG(1, 2))
	check := func(name string, batch []signed) {
		t.Helper()
		us := make([]*Unverified, len(batch))
		alone := true
		lib := ed25519consensus.NewBatchVerifier()
		for i, s := range batch {
			us[i] = &Unverified{author: s.author, dig: s.dig, sig: s.sig}
			lib.Add(s.author, s.dig, s.sig)
			if !ed25519consensus.Verify(s.author, s.dig, s.sig) {
				alone = false
			}
		}
		got, want := verifyBatchEquation(us), lib.Verify()
		if got != want || got != alone {
			t.Fatalf("%s: one term an author %v, the library's batch %v, each alone %v", name, got, want, alone)
		}
	}
	for round := range 40 {
		n := 1 + r.IntN(70)
		var batch []signed
		for k := range n {
			author := 0 // most signatures by one key, as a device's reads
			if r.IntN(4) == 0 {
				author = 1 + r.IntN(2)
			}
			batch = append(batch, good(author, round*100+k))
		}
		check(fmt.Sprintf("round %d, all good", round), batch)
		dig := sha512.Sum512_256(fmt.Appendf(nil, "torsion %d", round))
		batch[r.IntN(n)] = signed{"torsion", pubs[0], dig[:], torsionSigned(t, seeds[0], dig[:])}
		check(fmt.Sprintf("round %d, a torsion signature", round), batch)
		bad := bads[round%len(bads)](round)
		batch[r.IntN(n)] = bad
		check(fmt.Sprintf("round %d, %s", round, bad.name), batch)
	}
	if verifyBatchEquation(nil) {
		t.Fatal("an empty batch holds")
	}
}

// BenchmarkVerifyBatch checks 64 signatures in a batch, as a device checks
// a read's entries: all by one key (a read of deliveries), or by eight;
// one term an author against the library's batch.
func BenchmarkVerifyBatch(b *testing.B) {
	for _, authors := range []int{1, 8} {
		var us []*Unverified
		privs := make([]ed25519.PrivateKey, authors)
		for i := range privs {
			_, privs[i], _ = ed25519.GenerateKey(crand.Reader)
		}
		for i := range 64 {
			dig := sha512.Sum512_256(fmt.Appendf(nil, "entry %d", i))
			p := privs[i%authors]
			us = append(us, &Unverified{author: p.Public().(ed25519.PublicKey), dig: dig[:], sig: ed25519.Sign(p, dig[:])})
		}
		b.Run(fmt.Sprintf("authors=%d/per-author", authors), func(b *testing.B) {
			for b.Loop() {
				if !verifyBatchEquation(us) {
					b.Fatal("refused")
				}
			}
		})
		b.Run(fmt.Sprintf("authors=%d/library", authors), func(b *testing.B) {
			for b.Loop() {
				v := ed25519consensus.NewPreallocatedBatchVerifier(len(us))
				for _, u := range us {
					v.Add(u.author, u.dig, u.sig)
				}
				if !v.Verify() {
					b.Fatal("refused")
				}
			}
		})
	}
}
