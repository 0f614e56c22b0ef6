package entry

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"cspool/internal/command"
	"cspool/internal/keys"
)

type fixture struct {
	user, spool, other *keys.SecretKey
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	gen := func() *keys.SecretKey {
		k, err := keys.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return fixture{gen(), gen(), gen()}
}

func deliver(body []byte) *command.Command {
	return &command.Command{Kind: command.Deliver, Date: 1700000000000, Body: body}
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, size := range []int{0, 1, 1000, ChunkSize - 130, ChunkSize - 60, 2*ChunkSize + 7, 100 << 10, 3 << 20} {
		body := make([]byte, size)
		rand.Read(body)
		for _, pad := range []bool{false, true} {
			b, id, err := Seal(deliver(body), f.spool, f.user.Public(), "alice", &Options{NoPadding: !pad})
			if err != nil {
				t.Fatal(err)
			}
			o, err := Open(b, f.user, "alice", f.user.Public(), f.spool.Public())
			if err != nil {
				t.Fatalf("size %d pad %v: %v", size, pad, err)
			}
			if o.ID != id || !o.Author.Equal(f.spool.Public()) || o.User != "alice" {
				t.Fatalf("size %d: wrong id/author/user: %v %v", size, o.ID, o.User)
			}
			if !bytes.Equal(o.Cmd.Body, body) || o.Cmd.Kind != command.Deliver {
				t.Fatalf("size %d: body or kind changed", size)
			}
			innerLen, ok := innerSize(uint64(len(b) - headerSize))
			if !ok || ciphertextSize(innerLen) != len(b)-headerSize {
				t.Fatalf("size %d: ciphertext of %d bytes has no inner length", size, len(b)-headerSize)
			}
			want := innerFixed + 5 + len(body) + headerLen(t, body)
			if pad {
				want = PaddedLen(command.Deliver, want)
			}
			if innerLen != want {
				t.Errorf("size %d pad %v: inner length %d, want %d", size, pad, innerLen, want)
			}
		}
	}
}

func headerLen(t *testing.T, body []byte) int {
	h, err := command.EncodeHeader(deliver(body))
	if err != nil {
		t.Fatal(err)
	}
	return len(h)
}

// The spool's secret key must not open what the spool sealed: encryption
// uses an ephemeral key, not the author's.
func TestSpoolCannotDecrypt(t *testing.T) {
	f := newFixture(t)
	secret := []byte("Subject: secret\r\n\r\nthe token 4c1d-unique\r\n")
	b, _, err := Seal(deliver(secret), f.spool, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("4c1d-unique")) {
		t.Fatal("plaintext visible in the sealed entry")
	}
	_, err = Open(b, f.spool, "alice", f.spool.Public(), f.user.Public())
	if !errors.Is(err, ErrNotForUser) {
		t.Fatalf("open with the spool key: got %v, want ErrNotForUser", err)
	}
	// Even if the key id check is bypassed, the AEAD key cannot be derived.
	forged := append([]byte(nil), b...)
	id := f.spool.Public().KeyID()
	copy(forged[len(magic)+1:], id[:])
	_, err = Open(forged, f.spool, "alice", f.spool.Public())
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with the spool key and a patched key id: got %v, want ErrCorrupt", err)
	}
}

// reseal encrypts a hand-made inner plaintext and signature, for tests that
// need a valid ciphertext around invalid content.
func reseal(t *testing.T, inner, sig []byte, to keys.PublicKey) []byte {
	t.Helper()
	return resealIn(t, Version, inner, sig, to)
}

// resealIn is reseal in entry format v (2 or 4).
func resealIn(t *testing.T, v byte, inner, sig []byte, to keys.PublicKey) []byte {
	t.Helper()
	out := make([]byte, headerSize+ciphertextSize(len(inner)))
	aead, _, err := sealBody(out, recipient{to: to, version: v}, innerSource{prefix: inner, size: len(inner)})
	if err != nil {
		t.Fatal(err)
	}
	pos := len(out) - sigBoxSize
	aead.Seal(out[pos:pos], sigNonce[:], sig, out[:headerSize])
	return out
}

// buildInner lays out an inner plaintext like Seal does and signs it; mutate
// may change the inner bytes after signing.
func buildInner(t *testing.T, author *keys.SecretKey, to keys.PublicKey, user string, cmd []byte, mutate func(prefix []byte)) (inner, sig []byte) {
	t.Helper()
	var p []byte
	p = append(p, bytes.Repeat([]byte{9}, command.IDSize)...)
	p = append(p, author.Public().Ed25519...)
	p = append(p, byte(len(user)))
	p = append(p, user...)
	p = binary.BigEndian.AppendUint64(p, uint64(len(cmd)))
	p = append(p, cmd...)
	sig = author.Sign(innerDigest(to.KeyID(), p))
	if mutate != nil {
		mutate(p)
	}
	return p, sig
}

// openCase is an entry Open is given, and the error it must give.
type openCase struct {
	name    string
	b       []byte
	user    string
	trusted []keys.PublicKey
	want    error
}

func TestOpenErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range openCases(t, f) {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.b, f.user, tc.user, tc.trusted...)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Each sentinel is distinct.
	errs := []error{ErrTruncated, ErrUnknownVersion, ErrNotForUser, ErrCorrupt, ErrUnknownAuthor, ErrBadSignature, ErrBadCommand}
	for i, a := range errs {
		for j, b := range errs {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v is also %v", a, b)
			}
		}
	}
}

// openCases are TestOpenErrors' entries: one good, the others refused.
func openCases(t *testing.T, f fixture) []openCase {
	trusted := []keys.PublicKey{f.user.Public(), f.spool.Public()}
	good, _, err := Seal(deliver([]byte("hello world, a message")), f.spool, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	cmdBytes, _ := command.Encode(deliver([]byte("hi")))
	in, sig := buildInner(t, f.user, f.user.Public(), "alice", cmdBytes, nil)
	rs := func(in, sig []byte) []byte { return reseal(t, in, sig, f.user.Public()) }
	padded := func(in, sig []byte) ([]byte, []byte) { return append(in, 0, 1), sig }
	v2 := &command.Command{Kind: command.Expunge, Version: command.Version2, IDs: []command.ID{{1}}, Flags: []string{`\Deleted`}}
	expunge2, err := command.Encode(v2)
	if err != nil {
		t.Fatal(err)
	}
	format4, _, err := Seal(v2, f.user, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if format4[len(magic)] != Version4 {
		t.Fatalf("a command of version 2 sealed in format %d, want %d", format4[len(magic)], Version4)
	}
	if _, _, err := Seal(v2, f.user, f.user.Public(), "alice", &Options{Chains: NewChains(1)}); err == nil {
		t.Fatal("a command of version 2 sealed with chains")
	}

	return []openCase{
		{"good", good, "alice", trusted, nil},
		{"empty", nil, "alice", trusted, ErrTruncated},
		{"truncated header", good[:20], "alice", trusted, ErrTruncated},
		{"truncated body", good[:len(good)-1], "alice", trusted, ErrTruncated},
		{"extra bytes", append(append([]byte(nil), good...), 0), "alice", trusted, ErrCorrupt},
		{"bit flipped in ciphertext", mod(func(b []byte) []byte { b[headerSize+10] ^= 1; return b }), "alice", trusted, ErrCorrupt},
		{"bit flipped in tag", mod(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), "alice", trusted, ErrCorrupt},
		{"bit flipped in ephemeral key", mod(func(b []byte) []byte { b[headerSize-1] ^= 1; return b }), "alice", trusted, ErrCorrupt},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), "alice", trusted, ErrCorrupt},
		{"unknown version", mod(func(b []byte) []byte { b[4] = 5; return b }), "alice", trusted, ErrUnknownVersion},
		{"version 2 marked 4", mod(func(b []byte) []byte { b[4] = 4; return b }), "alice", trusted, ErrCorrupt},
		{"version 2 marked 3", mod(func(b []byte) []byte { b[4] = 3; return b }), "alice", trusted, ErrTruncated},
		{"version 1", mod(func(b []byte) []byte { b[4] = 1; return b }), "alice", trusted, ErrUnknownVersion},
		{"for another key", mod(func(b []byte) []byte { b[6] ^= 1; return b }), "alice", trusted, ErrNotForUser},
		{"for another user name", good, "bob", trusted, ErrNotForUser},
		{"unknown author", good, "alice", []keys.PublicKey{f.user.Public(), f.other.Public()}, ErrUnknownAuthor},
		{"bad signature", rs(buildInner(t, f.spool, f.user.Public(), "alice", cmdBytes, func(p []byte) { p[len(p)-1] ^= 1 })), "alice", trusted, ErrBadSignature},
		{"signature by untrusted key claiming trusted author", rs(forgeAuthor(t, f)), "alice", trusted, ErrBadSignature},
		{"signed garbage command", rs(buildInner(t, f.user, f.user.Public(), "alice", []byte{0x83, 1, 1}, nil)), "alice", trusted, ErrBadCommand},
		{"nonzero padding", rs(padded(buildInner(t, f.user, f.user.Public(), "alice", cmdBytes, nil))), "alice", trusted, ErrCorrupt},
		{"overlong command length", rs(overlong(t, f)), "alice", trusted, ErrCorrupt},
		{"short signature", rs(in, sig[:63]), "alice", trusted, ErrCorrupt},
		{"format 4 holding a command of version 1", resealIn(t, Version4, in, sig, f.user.Public()), "alice", trusted, ErrBadCommand},
		{"format 2 holding a command of version 2", rs(buildInner(t, f.user, f.user.Public(), "alice", expunge2, nil)), "alice", trusted, ErrBadCommand},
		{"format 4", format4, "alice", trusted, nil},
	}
}

// forgeAuthor writes the spool's public key as author but signs with another key.
func forgeAuthor(t *testing.T, f fixture) ([]byte, []byte) {
	cmd, _ := command.Encode(deliver([]byte("forged")))
	in, sig := buildInner(t, f.other, f.user.Public(), "alice", cmd, nil)
	copy(in[command.IDSize:], f.spool.Public().Ed25519)
	return in, sig
}

func overlong(t *testing.T, f fixture) ([]byte, []byte) {
	cmd, _ := command.Encode(deliver([]byte("x")))
	in, sig := buildInner(t, f.user, f.user.Public(), "alice", cmd, nil)
	off := command.IDSize + authorSize + 1 + len("alice")
	binary.BigEndian.PutUint64(in[off:], 1<<40)
	return in, sig
}

func TestSealRejectsInvalid(t *testing.T) {
	f := newFixture(t)
	if _, _, err := Seal(&command.Command{Kind: command.Deliver}, f.spool, f.user.Public(), "alice", nil); !errors.Is(err, command.ErrInvalid) {
		t.Fatalf("invalid command: got %v", err)
	}
	if _, _, err := Seal(deliver(nil), f.spool, f.user.Public(), "", nil); err == nil {
		t.Fatal("empty user accepted")
	}
}

func TestUniqueIDs(t *testing.T) {
	f := newFixture(t)
	seen := map[command.ID]bool{}
	for i := 0; i < 100; i++ {
		_, id, err := Seal(deliver([]byte("x")), f.spool, f.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatal("entry id repeated")
		}
		seen[id] = true
	}
}

func TestPadme(t *testing.T) {
	prev := 0
	for n := 0; n < 1<<20; n += 1 + n/7 {
		p := Padme(n)
		if p < n || p < prev {
			t.Fatalf("Padme(%d) = %d", n, p)
		}
		if n > 100 && float64(p-n) > 0.12*float64(n) {
			t.Fatalf("Padme(%d) = %d: overhead over 12%%", n, p)
		}
		if Padme(p) != p {
			t.Fatalf("Padme(Padme(%d)) != Padme(%d)", n, n)
		}
		prev = p
	}
}

func TestPaddedLen(t *testing.T) {
	message := []command.Kind{command.Deliver, command.Append, command.Checkpoint}
	others := []command.Kind{command.SetFlags, command.ClearFlags, command.ReplaceFlags, command.Copy, command.Move,
		command.Expunge, command.CreateMailbox, command.RenameMailbox, command.DeleteMailbox, command.Subscribe,
		command.Unsubscribe}
	for n := 0; n < 1<<22; n += 1 + n/5 {
		for _, k := range message {
			want := max(Padme(n), MinPadded)
			if got := PaddedLen(k, n); got != want {
				t.Fatalf("PaddedLen(%s, %d) = %d, want max(Padmé, %d) = %d", k, n, got, MinPadded, want)
			}
		}
		for _, k := range others {
			got := PaddedLen(k, n)
			if got < n || got < MinPadded || got&(got-1) != 0 || (got > MinPadded && got/2 >= n) {
				t.Fatalf("PaddedLen(%s, %d) = %d, want the smallest power of two >= %d and >= %d", k, n, got, n, MinPadded)
			}
			if PaddedLen(k, got) != got {
				t.Fatalf("PaddedLen(%s, PaddedLen(%s, %d)) != PaddedLen(%s, %d)", k, k, n, k, n)
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	fx := newFixture(f)
	for _, body := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{0}, 300)} {
		b, _, _ := Seal(deliver(body), fx.spool, fx.user.Public(), "alice", nil)
		f.Add(b)
	}
	f.Add([]byte("CSPE\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := Open(b, fx.user, "alice", fx.user.Public(), fx.spool.Public())
		if err == nil && o.Cmd == nil {
			t.Fatal("nil command without error")
		}
	})
}

// FuzzOpenInner feeds the inner checks and the signature's directly, past the AEAD that would
// otherwise reject nearly every random input.
func FuzzOpenInner(f *testing.F) {
	fx := newFixture(f)
	cmd, _ := command.Encode(deliver([]byte("hello")))
	var p []byte
	p = append(p, bytes.Repeat([]byte{9}, command.IDSize)...)
	p = append(p, fx.user.Public().Ed25519...)
	p = append(p, 5)
	p = append(p, "alice"...)
	p = binary.BigEndian.AppendUint64(p, uint64(len(cmd)))
	p = append(p, cmd...)
	keyID := fx.user.Public().KeyID()
	sig := fx.user.Sign(innerDigest(keyID, p))
	f.Add(p, sig)
	f.Add(append(p, 0, 0, 0), sig)
	f.Fuzz(func(t *testing.T, in, sig []byte) {
		u, err := checkInner(in, sig, nil, keyID, "alice", []keys.PublicKey{fx.user.Public()})
		if err != nil {
			return
		}
		o, err := u.Verify()
		if err == nil && (o.Cmd == nil || o.User != "alice") {
			t.Fatal("opened without a command or for the wrong user")
		}
		// A batch says what each entry alone says.
		_, errs := VerifyBatch([]*Unverified{u, u})
		if (errs[0] == nil) != (err == nil) || (errs[1] == nil) != (err == nil) {
			t.Fatalf("alone: %v; in a batch: %v", err, errs)
		}
	})
}

// The chunk layout: every inner length has exactly one ciphertext size, and
// sizes no inner length gives are refused.
func TestChunkSizes(t *testing.T) {
	for _, n := range []int{innerFixed + 1, 1000, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3*ChunkSize - 5, 3 * ChunkSize, 50 << 20} {
		size := ciphertextSize(n)
		if got, ok := innerSize(uint64(size)); !ok || got != n {
			t.Errorf("inner %d: ciphertext %d maps back to %d, %v", n, size, got, ok)
		}
	}
	for _, size := range []uint64{0, sigBoxSize + tagSize, sealedSize + sigBoxSize + 1, 2*sealedSize + sigBoxSize + tagSize, 1 << 62} {
		if n, ok := innerSize(size); ok {
			t.Errorf("ciphertext size %d accepted as inner %d", size, n)
		}
	}
}

// Chunks cannot be swapped, dropped or taken from another entry, and the
// signature box cannot be moved between entries.
func TestChunkTampering(t *testing.T) {
	f := newFixture(t)
	body := make([]byte, 3*ChunkSize)
	rand.Read(body)
	a, _, err := Seal(deliver(body), f.spool, f.user.Public(), "alice", &Options{NoPadding: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := Seal(deliver(body), f.spool, f.user.Public(), "alice", &Options{NoPadding: true})
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(e []byte, i int) []byte { return e[headerSize+i*sealedSize : headerSize+(i+1)*sealedSize] }
	swapped := append([]byte(nil), a...)
	copy(chunk(swapped, 0), chunk(a, 1))
	copy(chunk(swapped, 1), chunk(a, 0))
	foreign := append([]byte(nil), a...)
	copy(chunk(foreign, 1), chunk(b, 1))
	sigFromB := append(append([]byte(nil), a[:len(a)-sigBoxSize]...), b[len(b)-sigBoxSize:]...)
	dropped := append(append([]byte(nil), a[:headerSize+sealedSize]...), a[headerSize+2*sealedSize:]...)
	binary.BigEndian.PutUint64(dropped[len(magic)+1+keyIDSize:], uint64(len(dropped)-headerSize))
	for name, e := range map[string][]byte{"swapped chunks": swapped, "chunk from another entry": foreign,
		"signature box from another entry": sigFromB, "chunk dropped, length fixed up": dropped} {
		if _, err := Open(e, f.user, "alice", f.spool.Public()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := Open(a, f.user, "alice", f.spool.Public()); err != nil {
		t.Fatalf("the untouched entry: %v", err)
	}
}

// TestFiftyMegabytes: a 50 MB message seals and opens, byte for byte, with
// less than 3x the message of extra heap either way.
func TestFiftyMegabytes(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB")
	}
	f := newFixture(t)
	const n = 50 << 20
	body := make([]byte, n)
	rand.Read(body)
	var sealed []byte
	var err error
	peak := peakHeap(func() { sealed, _, err = Seal(deliver(body), f.spool, f.user.Public(), "alice", nil) })
	if err != nil {
		t.Fatal(err)
	}
	if peak >= 3*n {
		t.Errorf("sealing 50 MB: peak extra heap %.2fx the message", float64(peak)/n)
	}
	var o *Opened
	peak = peakHeap(func() { o, err = Open(sealed, f.user, "alice", f.spool.Public()) })
	if err != nil {
		t.Fatal(err)
	}
	if peak >= 3*n {
		t.Errorf("opening 50 MB: peak extra heap %.2fx the message", float64(peak)/n)
	}
	if !bytes.Equal(o.Cmd.Body, body) {
		t.Fatal("50 MB body changed")
	}
	t.Logf("50 MB: %d entry bytes", len(sealed))
}

// TestCheckSealedTo: what the spool can check without a secret agrees with
// Open on the recipient, the header and the length.
func TestCheckSealedTo(t *testing.T) {
	f := newFixture(t)
	b, _, err := Seal(deliver([]byte("hello")), f.spool, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	otherVersion := bytes.Clone(b)
	otherVersion[len(magic)] = 1
	for _, c := range []struct {
		name string
		data []byte
		to   keys.PublicKey
		want error
	}{
		{"sealed to the key", b, f.user.Public(), nil},
		{"sealed to another key", b, f.other.Public(), ErrNotForUser},
		{"empty", nil, f.user.Public(), ErrTruncated},
		{"not an entry", []byte("Subject: hi\r\n\r\nplain text, not sealed\r\n"), f.user.Public(), ErrCorrupt},
		{"header only", b[:headerSize], f.user.Public(), ErrTruncated},
		{"cut short", b[:len(b)-1], f.user.Public(), ErrTruncated},
		{"trailing bytes", append(bytes.Clone(b), 0), f.user.Public(), ErrCorrupt},
		{"version 1", otherVersion, f.user.Public(), ErrUnknownVersion},
	} {
		err := CheckSealedTo(c.data, c.to)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: CheckSealedTo = %v, want %v", c.name, err, c.want)
		}
	}
}

// Options.BodyPrefix seals the same entry as a body that starts with it:
// Open gives them joined, the length is the joined body's, and chunks that
// straddle the prefix and the body are right.
func TestBodyPrefix(t *testing.T) {
	f := newFixture(t)
	prefix := []byte("Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.org\r\n")
	for _, size := range []int{0, 1, 1000, ChunkSize - 200, ChunkSize - 100, ChunkSize + 3, 2*ChunkSize + 7} {
		body := make([]byte, size)
		rand.Read(body)
		joined := append(append([]byte(nil), prefix...), body...)
		var id command.ID
		rand.Read(id[:])
		for _, pad := range []bool{false, true} {
			b, _, err := Seal(deliver(body), f.spool, f.user.Public(), "alice", &Options{ID: id, NoPadding: !pad, BodyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			whole, _, err := Seal(deliver(joined), f.spool, f.user.Public(), "alice", &Options{ID: id, NoPadding: !pad})
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != len(whole) {
				t.Errorf("size %d pad %v: %d bytes sealed with the prefix, %d with the joined body", size, pad, len(b), len(whole))
			}
			o, err := Open(b, f.user, "alice", f.user.Public(), f.spool.Public())
			if err != nil {
				t.Fatalf("size %d pad %v: %v", size, pad, err)
			}
			if !bytes.Equal(o.Cmd.Body, joined) {
				t.Fatalf("size %d pad %v: opened body is not the prefix followed by the body", size, pad)
			}
		}
	}
}

// TestUnknownAuthorNamed: an entry by a key not trusted is refused with
// the key its header names, by Open and by OpenFrom, so that a device
// can say which key signed what it rejects.
func TestUnknownAuthorNamed(t *testing.T) {
	f := newFixture(t)
	b, _, err := Seal(deliver([]byte("from a stranger")), f.other, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := Open(b, f.user, "alice", f.user.Public(), f.spool.Public())
	_, err2 := OpenFrom(bytes.NewReader(b), int64(len(b)), f.user, "alice", f.user.Public(), f.spool.Public())
	for i, err := range []error{err1, err2} {
		var ue *UnknownAuthorError
		if !errors.As(err, &ue) || !errors.Is(err, ErrUnknownAuthor) {
			t.Fatalf("open %d: got %v, want an *UnknownAuthorError", i, err)
		}
		if !ue.Author.Equal(f.other.Public().Ed25519) {
			t.Errorf("open %d: author %x, want the stranger's %x", i, []byte(ue.Author), []byte(f.other.Public().Ed25519))
		}
		if want := fmt.Sprintf("entry author not trusted: signed by %x", []byte(f.other.Public().Ed25519)); err.Error() != want {
			t.Errorf("open %d: %q, want %q", i, err, want)
		}
	}
}
