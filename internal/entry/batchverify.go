package entry

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"

	"filippo.io/edwards25519"
)

// The batch equation, one term an author.
//
// A batch of signatures is checked by ZIP 215's batch equation, as
// ed25519consensus's BatchVerifier checks it:
//
//	[8]( [-Σ z_i·s_i]B + Σ [z_i]R_i + Σ [z_i·k_i]A_i ) = 0
//
// with z_i a random 128-bit scalar for each signature, s_i and R_i the
// signature's halves, k_i = SHA-512(R_i || A_i || M_i) reduced and A_i
// the author's key. The library gives every signature a term for its
// author's key, decoded again each time: 2n+1 points for n signatures. A
// device's read is mostly deliveries, every one signed by the same spool
// key, so the terms of one key are one term here, [Σ z_i·k_i]A, the same
// point of the group for the same z_i: n+1 points and one decoding of
// each author's key (about half the work of a batch of one author, and
// 13% of a first sync's CPU was the batch check). The points are decoded
// by the same function (filippo.io/edwards25519's SetBytes, which takes
// the encodings ZIP 215 takes), s must be canonical as there, and a batch
// the equation refuses is checked signature by signature (VerifyBatch),
// so what a device accepts is what ed25519consensus.Verify accepts,
// signature by signature (TestBatchEquationAsLibrary).

// verifyBatchEquation reports whether the batch equation holds for every
// (author, digest, signature) of us; false means some signature is bad,
// or could not be decoded, and not which.
func verifyBatchEquation(us []*Unverified) bool {
	n := len(us)
	if n == 0 {
		return false
	}
	type author struct {
		key [ed25519.PublicKeySize]byte
		at  int // index of its term in points and scalars
	}
	var (
		authors []author
		svals   = make([]edwards25519.Scalar, 1+n, 1+2*n)
		pvals   = make([]edwards25519.Point, 1+n, 1+2*n)
		z, s, k edwards25519.Scalar
		buf     [32]byte
		digest  [sha512.Size]byte
	)
	pvals[0].Set(edwards25519.NewGeneratorPoint())
	for i, u := range us {
		if len(u.author) != ed25519.PublicKeySize || len(u.sig) != ed25519.SignatureSize {
			return false
		}
		if _, err := pvals[1+i].SetBytes(u.sig[:32]); err != nil {
			return false
		}
		at := -1
		for _, a := range authors {
			if string(a.key[:]) == string(u.author) {
				at = a.at
				break
			}
		}
		if at < 0 {
			at = len(pvals)
			pvals = append(pvals, edwards25519.Point{})
			svals = append(svals, edwards25519.Scalar{})
			if _, err := pvals[at].SetBytes(u.author); err != nil {
				return false
			}
			authors = append(authors, author{key: [ed25519.PublicKeySize]byte(u.author), at: at})
		}
		if _, err := rand.Read(buf[:16]); err != nil {
			return false
		}
		if _, err := z.SetCanonicalBytes(buf[:]); err != nil {
			return false
		}
		if _, err := s.SetCanonicalBytes(u.sig[32:]); err != nil {
			return false
		}
		h := sha512.New()
		h.Write(u.sig[:32])
		h.Write(u.author)
		h.Write(u.dig)
		if _, err := k.SetUniformBytes(h.Sum(digest[:0])); err != nil {
			return false
		}
		svals[0].MultiplyAdd(&z, &s, &svals[0])
		svals[1+i].Set(&z)
		svals[at].MultiplyAdd(&z, &k, &svals[at])
	}
	svals[0].Negate(&svals[0])
	scalars := make([]*edwards25519.Scalar, len(svals))
	points := make([]*edwards25519.Point, len(pvals))
	for i := range svals {
		scalars[i], points[i] = &svals[i], &pvals[i]
	}
	check := new(edwards25519.Point).VarTimeMultiScalarMult(scalars, points)
	check.MultByCofactor(check)
	return check.Equal(edwards25519.NewIdentityPoint()) == 1
}
