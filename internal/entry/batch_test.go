package entry

import (
	"bytes"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// A batch of entries opens each as Open does: the good ones, from two
// authors, whatever else is in the batch; a bad signature or a bad
// command refused with Open's error, and only for that entry.
func TestVerifyBatchAsOpen(t *testing.T) {
	f := newFixture(t)
	trusted := []keys.PublicKey{f.user.Public(), f.spool.Public()}
	type item struct {
		name string
		b    []byte
		want error
	}
	var items []item
	for i := range 40 {
		author := f.spool
		if i%3 == 0 {
			author = f.user
		}
		b, _, err := Seal(deliver(bytes.Repeat([]byte{byte('a' + i%26)}, 100+i)), author, f.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{"sealed", b, nil})
	}
	// The cases that get past OpenUnverified: a bad signature, a forged
	// author, a garbage command behind a good signature.
	for _, c := range openCases(t, f) {
		if c.want == nil || errors.Is(c.want, ErrBadSignature) || errors.Is(c.want, ErrBadCommand) {
			items = append(items, item{c.name, c.b, c.want})
		}
	}
	good := slices.Clone(items[:40])
	for round := range 5 {
		batch := items
		switch round {
		case 3:
			batch = good // the batch's equation holds
		case 4:
			batch = items[:1] // a batch of one
		}
		r := rand.New(rand.NewPCG(uint64(round), 1))
		r.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		us := make([]*Unverified, len(batch))
		for i, it := range batch {
			u, err := OpenUnverified(it.b, f.user, "alice", trusted...)
			if err != nil {
				t.Fatalf("%s: OpenUnverified: %v", it.name, err)
			}
			us[i] = u
		}
		out, errs := VerifyBatch(us)
		for i, it := range batch {
			alone, aloneErr := Open(it.b, f.user, "alice", trusted...)
			switch {
			case it.want == nil && errs[i] != nil:
				t.Fatalf("round %d, %s: refused in a batch: %v", round, it.name, errs[i])
			case it.want != nil && !errors.Is(errs[i], it.want):
				t.Fatalf("round %d, %s: in a batch got %v, want %v", round, it.name, errs[i], it.want)
			case (aloneErr == nil) != (errs[i] == nil):
				t.Fatalf("round %d, %s: alone %v, in a batch %v", round, it.name, aloneErr, errs[i])
			}
			if it.want == nil && (out[i].ID != alone.ID || out[i].Author.KeyID() != alone.Author.KeyID() || !bytes.Equal(out[i].Cmd.Body, alone.Cmd.Body)) {
				t.Fatalf("round %d, %s: a batch opened it otherwise than Open", round, it.name)
			}
		}
	}
}

// A signature with a torsion component in R (which only the author's
// secret key can make) is the one kind RFC 8032's cofactorless check and
// ZIP 215's disagree on. Every way a device opens an entry checks by ZIP
// 215, so it is accepted alone, in a batch of good entries, and by
// OpenFrom alike: a device's answer does not depend on how much it reads
// at once (docs/FORMAT.md, "How a reader checks the signature").
func TestTorsionSignatureAcceptedAlike(t *testing.T) {
	f := newFixture(t)
	seed := make([]byte, ed25519.SeedSize)
	crand.Read(seed)
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	author := keys.PublicKey{X25519: f.other.Public().X25519, Ed25519: pub}
	trusted := []keys.PublicKey{f.spool.Public(), author}

	cmd, _ := command.Encode(deliver([]byte("signed with a torsion component")))
	var in []byte
	in = append(in, bytes.Repeat([]byte{7}, command.IDSize)...)
	in = append(in, pub...)
	in = append(in, byte(len("alice")))
	in = append(in, "alice"...)
	in = binary.BigEndian.AppendUint64(in, uint64(len(cmd)))
	in = append(in, cmd...)
	dig := innerDigest(f.user.Public().KeyID(), in)

	sig := torsionSigned(t, seed, dig)
	if ed25519.Verify(pub, dig, sig) {
		t.Fatal("crypto/ed25519 accepts the torsion signature: the test makes the wrong one")
	}
	b := reseal(t, in, sig, f.user.Public())

	if _, err := Open(b, f.user, "alice", trusted...); err != nil {
		t.Fatalf("alone: %v", err)
	}
	us := []*Unverified{}
	for i := range 5 {
		good, _, err := Seal(deliver([]byte{byte(i)}), f.spool, f.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			good = b
		}
		u, err := OpenUnverified(good, f.user, "alice", trusted...)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	if _, errs := VerifyBatch(us); slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		t.Fatalf("in a batch: %v", errs)
	}
	if _, err := OpenFrom(bytes.NewReader(b), int64(len(b)), f.user, "alice", trusted...); err != nil {
		t.Fatalf("OpenFrom: %v", err)
	}
}
