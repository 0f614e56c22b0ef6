package entry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/cryptotest"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/keys"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors/entries.json")

// vector is one frozen test vector; docs/FORMAT.md explains each field.
type vector struct {
	Name         string `json:"name"`
	UserSeed     string `json:"user_seed"`     // hex, 32 bytes
	AuthorSeed   string `json:"author_seed"`   // hex, 32 bytes
	UserPublic   string `json:"user_public"`   // text form
	AuthorPublic string `json:"author_public"` // text form
	User         string `json:"user"`
	EntryID      string `json:"entry_id"`    // hex
	Padding      bool   `json:"padding"`     // padded as a writer must (PaddedLen)
	Command      string `json:"command"`     // hex of the command encoding
	Inner        string `json:"inner"`       // hex of the inner plaintext (deterministic)
	RandomSeed   uint64 `json:"random_seed"` // seed of the deterministic random source used for HPKE
	Sealed       string `json:"sealed"`      // hex of the entry
}

func vectorCommands() []struct {
	name string
	pad  bool
	cmd  *command.Command
} {
	var ids []command.ID
	for i := byte(1); i <= 3; i++ {
		var id command.ID
		id[0], id[15] = i, i
		ids = append(ids, id)
	}
	return []struct {
		name string
		pad  bool
		cmd  *command.Command
	}{
		{"deliver, spool author, no padding", false, &command.Command{Kind: command.Deliver, Date: 1764000000000,
			Body: []byte("From: a@example.org\r\nTo: alice@example.org\r\nSubject: vector\r\n\r\nHello, Alice.\r\n")}},
		{"deliver, spool author, padded", true, &command.Command{Kind: command.Deliver, Date: 1764000000001,
			Body: []byte("no headers at all\n\x00\xff 8-bit\n")}},
		{"set flags, user author", true, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`, "$Important"}, IDs: ids}},
		{"rename mailbox, user author", false, &command.Command{Kind: command.RenameMailbox, Mailbox: "Projects", MailboxID: ids[0], NewName: "Archive/Projects"}},
		{"deliver, two chunks, padded", true, &command.Command{Kind: command.Deliver, Date: 1764000000002, Body: twoChunkBody()}},
		{"expunge of 100 messages, user author, padded", true, &command.Command{Kind: command.Expunge, IDs: hundredIDs(),
			Seen: &command.Head{Pos: 4242, Hash: bytes.Repeat([]byte{0x5e}, 32)}}},
		{"append, user author, padded", true, &command.Command{Kind: command.Append, Mailbox: "Drafts", MailboxID: ids[1],
			Flags: []string{`\Draft`}, Date: 1764000000003, Body: []byte("Subject: draft\r\n\r\nUnfinished.\r\n")}},
		{"body put back after a restore, user author, padded", true, &command.Command{Kind: command.Body,
			Body: append([]byte("From: a@example.org\r\nSubject: kept by a device\r\n\r\n"),
				bytes.Repeat([]byte("Only a device still had this line.\r\n"), 40)...)}},
		{"restoration, user author, padded", true, restorationVector()},
		{"expunge of version 2 (entry format 4), user author, padded", true, &command.Command{Kind: command.Expunge,
			Version: command.Version2, IDs: ids, Flags: []string{`\Deleted`}, MailboxID: ids[2]}},
		{"delete mailbox of version 2 (entry format 4), user author, padded", true, &command.Command{Kind: command.DeleteMailbox,
			Version: command.Version2, Mailbox: "Projects/Old", MailboxID: ids[0], IDs: ids[1:]}},
	}
}

// restorationVector is a Restoration whose state is a short stand-in (the
// entry format does not look inside it; docs/FORMAT.md §5 specifies it).
func restorationVector() *command.Command {
	state := []byte("restoration state")
	digest := sha256.Sum256(state)
	return &command.Command{Kind: command.Restoration, Position: 1234, Digest: digest[:],
		Base: &command.Head{Pos: 1000, Hash: bytes.Repeat([]byte{0xb5}, 32)}, Body: state}
}

// hundredIDs are message ids for a command that pads beyond the smallest
// bucket.
func hundredIDs() []command.ID {
	ids := make([]command.ID, 100)
	for i := range ids {
		ids[i][0], ids[i][15] = byte(i), 0x64
	}
	return ids
}

// twoChunkBody is a message whose inner plaintext spans two chunks.
func twoChunkBody() []byte {
	b := []byte("Subject: two chunks\r\n\r\n")
	for i := 0; len(b) < ChunkSize; i++ {
		b = fmt.Appendf(b, "line %05d of a message longer than one chunk\r\n", i)
	}
	return b
}

func seedKey(t *testing.T, b byte) (*keys.SecretKey, string) {
	seed := bytes.Repeat([]byte{b}, 32)
	k, err := keys.NewSecretKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k, hex.EncodeToString(seed)
}

var vectorsPath = filepath.Join("..", "..", "testdata", "vectors", "entries.json")

func loadVectors(t *testing.T, path string) []vector {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading vectors: %v (run go test ./internal/entry -run TestVectors -update to create them)", err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func unhexT(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t, vectorsPath)
	}
	vs := loadVectors(t, vectorsPath)
	if len(vs) != len(vectorCommands()) {
		t.Fatalf("%d vectors, want %d", len(vs), len(vectorCommands()))
	}
	for i, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			unhex := func(s string) []byte { return unhexT(t, s) }
			user, err := keys.NewSecretKey(unhex(v.UserSeed))
			if err != nil {
				t.Fatal(err)
			}
			author, err := keys.NewSecretKey(unhex(v.AuthorSeed))
			if err != nil {
				t.Fatal(err)
			}
			if user.Public().String() != v.UserPublic || author.Public().String() != v.AuthorPublic {
				t.Fatal("key derivation from the seeds does not give the recorded public keys")
			}
			want := vectorCommands()[i].cmd
			enc, err := command.Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(enc) != v.Command {
				t.Fatalf("command encoding:\n got %x\nwant %s", enc, v.Command)
			}
			// Opening the frozen entry gives back the command, id and author.
			o, err := Open(unhex(v.Sealed), user, v.User, author.Public())
			if err != nil {
				t.Fatalf("opening the frozen entry: %v", err)
			}
			if o.ID.String() != v.EntryID || !command.Equal(o.Cmd, want) || !o.Author.Equal(author.Public()) {
				t.Fatal("frozen entry opened to a different id, command or author")
			}
			// The inner plaintext is deterministic given keys, id and command.
			var id command.ID
			copy(id[:], unhex(v.EntryID))
			cryptotest.SetGlobalRandom(t, v.RandomSeed)
			sealed, _, err := Seal(want, author, user.Public(), v.User, &Options{ID: id, NoPadding: !v.Padding})
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(innerOf(t, sealed, user)); got != v.Inner {
				t.Fatalf("inner plaintext:\n got %s\nwant %s", got, v.Inner)
			}
			// With the same deterministic random source, the whole entry is
			// reproduced byte for byte.
			if hex.EncodeToString(sealed) != v.Sealed {
				t.Fatal("sealing with the recorded random seed does not reproduce the frozen entry")
			}
		})
	}
}

// innerOf decrypts an entry and returns its inner plaintext.
func innerOf(t *testing.T, b []byte, k *keys.SecretKey) []byte {
	t.Helper()
	d, err := decrypt(b, k, k.Public().KeyID())
	if err != nil {
		t.Fatal(err)
	}
	return d.inner
}

func writeVectors(t *testing.T, path string) {
	user, userSeed := seedKey(t, 0x11)
	var vs []vector
	for i, vc := range vectorCommands() {
		author, authorSeed := user, userSeed
		if vc.cmd.Kind == command.Deliver {
			author, authorSeed = seedKey(t, 0x22)
		}
		var id command.ID
		for j := range id {
			id[j] = byte(0xa0 + i)
		}
		enc, err := command.Encode(vc.cmd)
		if err != nil {
			t.Fatal(err)
		}
		seed := uint64(1000 + i)
		cryptotest.SetGlobalRandom(t, seed)
		sealed, _, err := Seal(vc.cmd, author, user.Public(), "alice", &Options{ID: id, NoPadding: !vc.pad})
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, vector{
			Name: vc.name, UserSeed: userSeed, AuthorSeed: authorSeed,
			UserPublic: user.Public().String(), AuthorPublic: author.Public().String(),
			User: "alice", EntryID: id.String(), Padding: vc.pad,
			Command: hex.EncodeToString(enc), Inner: hex.EncodeToString(innerOf(t, sealed, user)),
			RandomSeed: seed, Sealed: hex.EncodeToString(sealed),
		})
	}
	out, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVectorsByHand opens every frozen entry following docs/FORMAT.md step by
// step, with the primitives alone and none of this package's code, so the
// document and the implementation cannot drift apart unnoticed.
func TestVectorsByHand(t *testing.T) {
	for _, v := range loadVectors(t, vectorsPath) {
		t.Run(v.Name, func(t *testing.T) {
			unhex := func(s string) []byte { return unhexT(t, s) }
			user, err := keys.NewSecretKey(unhex(v.UserSeed))
			if err != nil {
				t.Fatal(err)
			}
			e := unhex(v.Sealed)
			// Header: magic, version, key id, ciphertext length, enc.
			// Format 4 for a command of version 2 (its second byte, after
			// the array's), else 2.
			wantV := byte(2)
			if unhex(v.Command)[1] == 2 {
				wantV = 4
			}
			if string(e[:4]) != "CSPE" || e[4] != wantV {
				t.Fatalf("header starts %q", e[:5])
			}
			keyID := sha256.Sum256(slices.Concat([]byte("cspool/v1 key id"), user.Public().X25519.Bytes(), user.Public().Ed25519))
			if !bytes.Equal(e[5:13], keyID[:8]) {
				t.Fatal("key id")
			}
			if binary.BigEndian.Uint64(e[13:21]) != uint64(len(e)-53) {
				t.Fatal("ciphertext length")
			}
			header, ct := e[:53], e[53:]
			sk, err := hpke.NewDHKEMPrivateKey(user.X25519())
			if err != nil {
				t.Fatal(err)
			}
			r, err := hpke.NewRecipient(header[21:53], sk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte("cspool/v2 entry"))
			if err != nil {
				t.Fatal(err)
			}
			key, err := r.Export("cspool/v2 entry key", 32)
			if err != nil {
				t.Fatal(err)
			}
			aead, err := chacha20poly1305.New(key)
			if err != nil {
				t.Fatal(err)
			}
			// Chunks of 65536 plaintext bytes (+16 tag), then the
			// 80-byte signature box.
			sigBox, chunks := ct[len(ct)-80:], ct[:len(ct)-80]
			var inner []byte
			sum := blake3.New()
			sum.WriteString("cspool/v2 entry signature\x00")
			sum.Write(keyID[:8])
			for i := 0; len(chunks) > 0; i++ {
				n := min(len(chunks), 65536+16)
				nonce := make([]byte, 12)
				binary.BigEndian.PutUint64(nonce[4:], uint64(i))
				pt, err := aead.Open(nil, nonce, chunks[:n], header)
				if err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
				h := blake3.Sum256(pt)
				sum.Write(h[:])
				inner = append(inner, pt...)
				chunks = chunks[n:]
			}
			sig, err := aead.Open(nil, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, sigBox, header)
			if err != nil {
				t.Fatalf("signature box: %v", err)
			}
			if hex.EncodeToString(inner) != v.Inner {
				t.Fatal("inner plaintext differs from the vector's")
			}
			// Inner: id, author, user, command; the signature covers the
			// digest of every chunk.
			author := ed25519.PublicKey(inner[16:48])
			if !ed25519.Verify(author, sum.Sum(nil), sig) {
				t.Fatal("signature does not verify")
			}
			ulen := int(inner[48])
			if string(inner[49:49+ulen]) != v.User {
				t.Fatal("user name")
			}
			cmdLen := binary.BigEndian.Uint64(inner[49+ulen:])
			if hex.EncodeToString(inner[57+ulen:57+ulen+int(cmdLen)]) != v.Command {
				t.Fatal("command bytes")
			}
			if len(bytes.Trim(inner[57+ulen+int(cmdLen):], "\x00")) != 0 {
				t.Fatal("padding not zero")
			}
			// Padding length: the writer's rule, from the command's kind
			// (its third byte, after the CBOR array head and the version).
			want := 57 + ulen + int(cmdLen)
			if v.Padding {
				want = padByHand(inner[57+ulen+2], want)
			}
			if len(inner) != want {
				t.Fatalf("inner plaintext of %d bytes, the padding rule gives %d", len(inner), want)
			}
		})
	}
}

// padByHand is the writer's padding rule of docs/FORMAT.md §2 written from
// the text: at least 1024 bytes; Deliver (1), Append (2), Checkpoint (14),
// Body (15) and Restoration (16) to the Padmé length, every other kind to a
// power of two.
func padByHand(kind byte, l int) int {
	if l <= 1024 {
		return 1024
	}
	if kind == 1 || kind == 2 || kind == 14 || kind == 15 || kind == 16 {
		e := 0 // floor(log2 l)
		for 1<<(e+1) <= l {
			e++
		}
		s := 0 // floor(log2 e) + 1
		for 1<<s <= e {
			s++
		}
		step := 1 << (e - s)
		return (l + step - 1) / step * step
	}
	p := 1
	for p < l {
		p *= 2
	}
	return p
}
