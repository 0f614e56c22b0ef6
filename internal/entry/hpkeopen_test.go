package entry

import (
	"bytes"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/keys"
)

// TestRecipientKeyAsHPKE: recipientKey is crypto/hpke's exported key, for
// the sender's side and the recipient's, over fresh keys; a low-order
// encapsulated key (an all-zero shared secret) is refused as crypto/hpke
// refuses it.
func TestRecipientKeyAsHPKE(t *testing.T) {
	for range 200 {
		me, err := keys.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pk, err := hpke.NewDHKEMPublicKey(me.X25519().PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte(hpkeInfo))
		if err != nil {
			t.Fatal(err)
		}
		want, err := sender.Export(exportContext, chacha20poly1305.KeySize)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := hpke.NewDHKEMPrivateKey(me.X25519())
		if err != nil {
			t.Fatal(err)
		}
		r, err := hpke.NewRecipient(enc, sk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte(hpkeInfo))
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := r.Export(exportContext, chacha20poly1305.KeySize)
		if err != nil {
			t.Fatal(err)
		}
		got, err := recipientKey(me, enc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:], want) || !bytes.Equal(theirs, want) {
			t.Fatalf("key %x, crypto/hpke's %x (sender) and %x (recipient)", got, want, theirs)
		}
	}
	me, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := hpke.NewDHKEMPrivateKey(me.X25519())
	for _, enc := range [][]byte{make([]byte, 32), append([]byte{1}, make([]byte, 31)...)} {
		_, herr := hpke.NewRecipient(enc, sk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte(hpkeInfo))
		_, err := recipientKey(me, enc)
		if herr == nil || !errors.Is(err, ErrCorrupt) {
			t.Errorf("low-order key %x: %v, crypto/hpke %v; want both refused, ErrCorrupt", enc, err, herr)
		}
	}
	if _, err := recipientKey(me, make([]byte, 31)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a short encapsulated key: %v", err)
	}
}

// TestOpenAllocations: opening an entry allocates its plaintext, the
// chunks' hashes, the command and the X25519 exchange's few values, not
// crypto/hpke's key schedule (96 allocations, 7.3 KB an entry).
func TestOpenAllocations(t *testing.T) {
	f := newFixture(t)
	b, _, err := Seal(deliver(bytes.Repeat([]byte("x"), 10<<10)), f.spool, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(b, f.user, "alice", f.spool.Public()); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := Open(b, f.user, "alice", f.spool.Public()); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 30 {
		t.Errorf("Open of a 10 KB delivery: %.0f allocations; want at most 30", allocs)
	}
	t.Logf("Open of a 10 KB delivery: %.0f allocations", allocs)
}
