package entry

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"testing/cryptotest"

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
	Padding      bool   `json:"padding"`     // Padmé on
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
	}
}

func seedKey(t *testing.T, b byte) (*keys.SecretKey, string) {
	seed := bytes.Repeat([]byte{b}, 32)
	k, err := keys.NewSecretKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k, hex.EncodeToString(seed)
}

func TestVectors(t *testing.T) {
	path := filepath.Join("..", "..", "testdata", "vectors", "entries.json")
	if *update {
		writeVectors(t, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading vectors: %v (run go test ./internal/entry -run TestVectors -update to create them)", err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != len(vectorCommands()) {
		t.Fatalf("%d vectors, want %d", len(vs), len(vectorCommands()))
	}
	for i, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			unhex := func(s string) []byte {
				b, err := hex.DecodeString(s)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
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
	in, err := decrypt(b, k)
	if err != nil {
		t.Fatal(err)
	}
	return in
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
