package entry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// sealChained seals n deliveries of distinct bodies to f.user through ch.
func sealChained(t testing.TB, f fixture, ch *Chains, n, size int) (entries, bodies [][]byte) {
	t.Helper()
	for range n {
		body := make([]byte, size)
		rand.Read(body)
		b, _, err := Seal(deliver(body), f.spool, f.user.Public(), "alice", &Options{Chains: ch})
		if err != nil {
			t.Fatal(err)
		}
		entries, bodies = append(entries, b), append(bodies, body)
	}
	return entries, bodies
}

// opener returns a function that opens entries[i] as f.user and checks
// it holds bodies[i].
func opener(t *testing.T, f fixture, entries, bodies [][]byte) func(i int) {
	return func(i int) {
		t.Helper()
		o, err := Open(entries[i], f.user, "alice", f.spool.Public())
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !bytes.Equal(o.Cmd.Body, bodies[i]) {
			t.Fatalf("entry %d opened to another body", i)
		}
	}
}

func chainHeader(b []byte) (enc string, step uint32) {
	return hex.EncodeToString(b[headerSize-encSize : headerSize]), binary.BigEndian.Uint32(b[headerSize:header3Size])
}

// Entries sealed through Chains are version 3, share one encapsulated key
// in steps 0, 1, 2, ..., and open (alone, in any order, by OpenFrom) to
// what was sealed; a new context starts after MaxChainSteps.
func TestChainRoundTrip(t *testing.T) {
	f := newFixture(t)
	ch := NewChains(0)
	entries, bodies := sealChained(t, f, ch, MaxChainSteps+2, 100)
	first, _ := chainHeader(entries[0])
	for i, b := range entries {
		if b[4] != Version3 {
			t.Fatalf("entry %d is version %d", i, b[4])
		}
		if len(b) != SealedLen(MinPadded)+stepSize {
			t.Fatalf("entry %d is %d bytes", i, len(b))
		}
		enc, step := chainHeader(b)
		switch {
		case i < MaxChainSteps && (enc != first || step != uint32(i)):
			t.Fatalf("entry %d: context %s step %d, want %s step %d", i, enc, step, first, i)
		case i >= MaxChainSteps && (enc == first || step != uint32(i-MaxChainSteps)):
			t.Fatalf("entry %d: context %s step %d, want a new context at step %d", i, enc, step, i-MaxChainSteps)
		}
		if err := CheckSealedTo(b, f.user.Public()); err != nil {
			t.Fatalf("entry %d: CheckSealedTo: %v", i, err)
		}
	}
	// Backwards (each from the marks), then forwards, then a few by
	// OpenFrom; the process's contexts forgotten first, so the first
	// entry opened is the context's last.
	forgetOpenChains()
	open := opener(t, f, entries, bodies)
	for i := len(entries) - 1; i >= 0; i-- {
		open(i)
	}
	for i := range entries {
		open(i)
	}
	for _, i := range []int{0, 17, MaxChainSteps - 1, MaxChainSteps + 1} {
		s, err := OpenFrom(bytes.NewReader(entries[i]), int64(len(entries[i])), f.user, "alice", f.spool.Public())
		if err != nil {
			t.Fatalf("OpenFrom entry %d: %v", i, err)
		}
		if s.BodyLen != int64(len(bodies[i])) {
			t.Fatalf("OpenFrom entry %d: body of %d bytes", i, s.BodyLen)
		}
	}
	// Another user's key: its own context.
	other, _, err := Seal(deliver([]byte("x")), f.spool, f.other.Public(), "bob", &Options{Chains: ch})
	if err != nil {
		t.Fatal(err)
	}
	if enc, step := chainHeader(other); step != 0 || enc == first {
		t.Fatalf("another recipient's entry: context %s step %d", enc, step)
	}
	if ch.Len() != 2 {
		t.Fatalf("Chains holds %d contexts, want 2", ch.Len())
	}
}

func forgetOpenChains() {
	openChains.mu.Lock()
	clear(openChains.m)
	openChains.mu.Unlock()
}

// A step changed in the header is another key (and the header is every
// chunk's associated data): ErrCorrupt; a step at or past MaxChainSteps is
// refused before any derivation.
func TestChainStepTampered(t *testing.T) {
	f := newFixture(t)
	entries, _ := sealChained(t, f, NewChains(0), 3, 10)
	for _, step := range []uint32{0, 2, MaxChainSteps, 1<<32 - 1} {
		b := bytes.Clone(entries[1])
		binary.BigEndian.PutUint32(b[headerSize:], step)
		_, err := Open(b, f.user, "alice", f.spool.Public())
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("step %d: %v, want ErrCorrupt", step, err)
		}
		if step >= MaxChainSteps && !strings.Contains(err.Error(), "chain step") {
			t.Fatalf("step %d: %v, want the step named", step, err)
		}
	}
	// The encapsulated key of another context: ErrCorrupt.
	b := bytes.Clone(entries[1])
	copy(b[headerSize-encSize:headerSize], entries[0][headerSize-encSize:headerSize])
	b[headerSize-1] ^= 1
	if _, err := Open(b, f.user, "alice", f.spool.Public()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("another encapsulated key: %v, want ErrCorrupt", err)
	}
	// Someone else's key still cannot open it; the spool's cannot either.
	if _, err := Open(entries[0], f.spool, "alice", f.spool.Public()); !errors.Is(err, ErrNotForUser) {
		t.Fatalf("the spool's key: %v, want ErrNotForUser", err)
	}
}

// Many goroutines sealing through one Chains never share a step, and every
// entry opens.
func TestChainConcurrent(t *testing.T) {
	f := newFixture(t)
	ch := NewChains(0)
	var mu sync.Mutex
	seen := map[string]bool{}
	var all [][]byte
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			entries, _ := sealChained(t, f, ch, 40, 50)
			mu.Lock()
			defer mu.Unlock()
			for _, b := range entries {
				enc, step := chainHeader(b)
				k := fmt.Sprint(enc, "/", step)
				if seen[k] {
					t.Errorf("step %d of %s sealed twice", step, enc)
				}
				seen[k] = true
				all = append(all, b)
			}
		})
	}
	wg.Wait()
	forgetOpenChains()
	var owg sync.WaitGroup
	for i := range 4 {
		owg.Go(func() {
			for j := i; j < len(all); j += 4 {
				if _, err := Open(all[j], f.user, "alice", f.spool.Public()); err != nil {
					t.Errorf("entry %d: %v", j, err)
				}
			}
		})
	}
	owg.Wait()
}

// A device's read is opened by a worker per core, each taking the next 64
// entries (the syncer's openAll): whichever worker opens an entry, it
// costs about two derivations (its key and the chain key after it), not a
// walk from the last mark for every entry behind the furthest one opened;
// and in any order every entry opens to what was sealed.
func TestChainReadersDeriveOnce(t *testing.T) {
	f := newFixture(t)
	entries, bodies := sealChained(t, f, NewChains(0), 512, 10)
	open := opener(t, f, entries, bodies)
	var n int
	derived = func() { n++ }
	defer func() { derived = nil }()
	forgetOpenChains()
	// Two workers, one entry each in turn: the first takes 0 to 63, the
	// second 64 to 127, then 128 to 191 and 192 to 255, and so on.
	for run := 0; run < len(entries); run += 128 {
		for i := range 64 {
			open(run + i)
			open(run + 64 + i)
		}
	}
	if max := 3 * len(entries); n > max {
		t.Fatalf("%d derivations for %d entries opened by two workers, want at most %d", n, len(entries), max)
	}
	// Four workers, and then any order: every entry opens.
	forgetOpenChains()
	for i := range 128 {
		for w := range 4 {
			open(w*128 + i)
		}
	}
	for _, i := range mrand.Perm(len(entries)) {
		open(i)
	}
}

// Chains drops a context past its bound, and the recipient gets a new one.
func TestChainsBound(t *testing.T) {
	ch := NewChains(3)
	var keys []keys.PublicKey
	for range 5 {
		keys = append(keys, newFixture(t).user.Public())
	}
	f := newFixture(t)
	for _, k := range keys {
		if _, _, err := Seal(deliver([]byte("x")), f.spool, k, "alice", &Options{Chains: ch}); err != nil {
			t.Fatal(err)
		}
	}
	if ch.Len() != 3 {
		t.Fatalf("Chains holds %d contexts, want 3", ch.Len())
	}
}

// What the writer holds after sealing an entry is the next chain key: it
// gives the next entry's key and not the one it sealed, so a copy of the
// writer's memory opens nothing sealed before it.
func TestChainWriterForgets(t *testing.T) {
	f := newFixture(t)
	ch := NewChains(0)
	entries, _ := sealChained(t, f, ch, 2, 10)
	var id [32]byte
	copy(id[:], f.user.Public().X25519.Bytes())
	held := ch.m[id].ck
	key := chainStep(&held)
	try := func(b []byte) error {
		a, err := chacha20poly1305.New(key[:])
		if err != nil {
			t.Fatal(err)
		}
		var nonce [chacha20poly1305.NonceSize]byte
		_, err = a.Open(nil, chunkNonce(&nonce, 0), b[header3Size:header3Size+MinPadded+tagSize], b[:header3Size])
		return err
	}
	for i, b := range entries {
		if try(b) == nil {
			t.Fatalf("the writer's state opens entry %d", i)
		}
	}
	next, _, err := Seal(deliver([]byte("y")), f.spool, f.user.Public(), "alice", &Options{Chains: ch})
	if err != nil {
		t.Fatal(err)
	}
	if try(next) != nil {
		t.Fatal("the writer's state does not give the next entry's key")
	}
}

var chainVectorsPath = filepath.Join("..", "..", "testdata", "vectors", "chain.hex")

// TestChainByHand opens a frozen run of three version 3 entries following
// docs/FORMAT.md §2, "Version 3: a chain of keys", with the primitives alone, and checks that sealing
// with the recorded random source gives the same bytes.
func TestChainByHand(t *testing.T) {
	user, _ := seedKey(t, 0x11)
	author, _ := seedKey(t, 0x22)
	seal := func() [][]byte {
		cryptotest.SetGlobalRandom(t, 3000)
		ch := NewChains(0)
		var out [][]byte
		for i := range 3 {
			var id command.ID
			for j := range id {
				id[j] = byte(0xc0 + i)
			}
			c := &command.Command{Kind: command.Deliver, Date: 1764000000000 + int64(i), Body: []byte(strings.Repeat("chained ", 10*(i+1)))}
			b, _, err := Seal(c, author, user.Public(), "alice", &Options{ID: id, Chains: ch})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	if *update {
		var lines []string
		for _, b := range seal() {
			lines = append(lines, hex.EncodeToString(b))
		}
		if err := os.WriteFile(chainVectorsPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(chainVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var frozen [][]byte
	for _, l := range strings.Fields(string(raw)) {
		frozen = append(frozen, unhexT(t, l))
	}
	if len(frozen) != 3 {
		t.Fatalf("%d frozen entries, want 3", len(frozen))
	}
	for i, b := range seal() {
		if !bytes.Equal(b, frozen[i]) {
			t.Fatalf("sealing with the recorded random source does not reproduce frozen entry %d", i)
		}
	}

	// By hand: one HPKE context, chain key 0 exported from it, each
	// entry's key and the next chain key expanded from its chain key.
	sk, err := hpke.NewDHKEMPrivateKey(user.X25519())
	if err != nil {
		t.Fatal(err)
	}
	var ck []byte
	for i, e := range frozen {
		if string(e[:4]) != "CSPE" || e[4] != 3 || binary.BigEndian.Uint64(e[13:21]) != uint64(len(e)-57) {
			t.Fatalf("entry %d: header %x", i, e[:21])
		}
		if !bytes.Equal(e[21:53], frozen[0][21:53]) || binary.BigEndian.Uint32(e[53:57]) != uint32(i) {
			t.Fatalf("entry %d: not step %d of the first entry's context", i, i)
		}
		if i == 0 {
			r, err := hpke.NewRecipient(e[21:53], sk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte("cspool/v3 entry chain"))
			if err != nil {
				t.Fatal(err)
			}
			if ck, err = r.Export("cspool/v3 chain key", 32); err != nil {
				t.Fatal(err)
			}
		}
		key, _ := hkdf.Expand(sha256.New, ck, "cspool/v3 entry key", 32)
		ck, _ = hkdf.Expand(sha256.New, ck, "cspool/v3 next chain key", 32)
		aead, err := chacha20poly1305.New(key)
		if err != nil {
			t.Fatal(err)
		}
		header, ct := e[:57], e[57:]
		sigBox, chunk := ct[len(ct)-80:], ct[:len(ct)-80]
		inner, err := aead.Open(nil, make([]byte, 12), chunk, header)
		if err != nil {
			t.Fatalf("entry %d: chunk: %v", i, err)
		}
		sig, err := aead.Open(nil, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, sigBox, header)
		if err != nil {
			t.Fatalf("entry %d: signature box: %v", i, err)
		}
		// The signature is version 2's, unchanged.
		h := blake3.Sum256(inner)
		sum := blake3.New()
		sum.WriteString("cspool/v2 entry signature\x00")
		sum.Write(e[5:13])
		sum.Write(h[:])
		if !ed25519.Verify(ed25519.PublicKey(inner[16:48]), sum.Sum(nil), sig) {
			t.Fatalf("entry %d: signature does not verify", i)
		}
		if !bytes.Contains(inner, []byte(strings.Repeat("chained ", 10*(i+1)))) {
			t.Fatalf("entry %d: body not in the inner plaintext", i)
		}
	}
}
