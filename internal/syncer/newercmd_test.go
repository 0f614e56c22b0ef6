package syncer

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
)

// sealRaw seals cmd, command bytes this code need not be able to decode
// (as a newer cspool may write them), by docs/FORMAT.md section 2 with
// the primitives alone: one chunk, padded to entry.MinPadded.
func sealRaw(t *testing.T, author *keys.SecretKey, to keys.PublicKey, user string, cmd []byte) ([]byte, command.ID) {
	t.Helper()
	var id command.ID
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	inner := append([]byte(nil), id[:]...)
	inner = append(inner, author.Public().Ed25519...)
	inner = append(inner, byte(len(user)))
	inner = append(inner, user...)
	inner = binary.BigEndian.AppendUint64(inner, uint64(len(cmd)))
	inner = append(inner, cmd...)
	if len(inner) < entry.MinPadded {
		inner = append(inner, make([]byte, entry.MinPadded-len(inner))...)
	}
	if len(inner) > entry.ChunkSize {
		t.Fatalf("sealRaw seals one chunk; this inner plaintext is %d bytes", len(inner))
	}
	pk, err := hpke.NewDHKEMPublicKey(to.X25519)
	if err != nil {
		t.Fatal(err)
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte("cspool/v2 entry"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := sender.Export("cspool/v2 entry key", chacha20poly1305.KeySize)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		t.Fatal(err)
	}
	keyID := to.KeyID()
	header := []byte("CSPE\x02")
	header = append(header, keyID[:]...)
	header = binary.BigEndian.AppendUint64(header, uint64(len(inner)+chacha20poly1305.Overhead+64+chacha20poly1305.Overhead))
	header = append(header, enc...)
	out := aead.Seal(bytes.Clone(header), make([]byte, chacha20poly1305.NonceSize), inner, header)
	chunk := blake3.Sum256(inner)
	d := blake3.New()
	d.WriteString("cspool/v2 entry signature\x00")
	d.Write(keyID[:])
	d.Write(chunk[:])
	sigNonce := []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}
	return aead.Seal(out, sigNonce, author.Sign(d.Sum(nil)), header), id
}

// TestNewerCommandSkipped: an entry the user's key signed whose command
// this device cannot decode (a kind, an encoding version or a field that a
// newer cspool may write) is rejected alone, as a bad command, and the
// sync goes on past it; the device records no id for it, so it does not
// list it in its checkpoints (docs/FORMAT.md section 3).
func TestNewerCommandSkipped(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	token := bytes.Repeat([]byte{0x70}, 16)
	// [1, 17, {10: digest}]: a kind 17, with a field every kind knows.
	kind17 := append([]byte{0x83, 0x01, 0x11, 0xa1, 0x0a, 0x58, 0x20}, bytes.Repeat([]byte{0xd1}, 32)...)
	// [2, 1, {7: 1}]: a Deliver in an encoding version 2.
	version2 := []byte{0x83, 0x02, 0x01, 0xa1, 0x07, 0x01}
	// [1, 8, {6: id, 13: token}]: an Expunge with a field 13.
	newField := append([]byte{0x83, 0x01, 0x08, 0xa2, 0x06, 0x50}, bytes.Repeat([]byte{0x1d}, 16)...)
	newField = append(append(newField, 0x0d, 0x50), token...)
	// The same hand sealing of a command this device knows applies: what
	// is rejected below is the command, not the sealing.
	known, err := command.Encode(&command.Command{Kind: command.CreateMailbox, Mailbox: "Known"})
	if err != nil {
		t.Fatal(err)
	}

	r.deliver(r.spool, msg(0))
	var newer []uint64
	var newerIDs [][16]byte
	for _, cmd := range [][]byte{kind17, version2, newField} {
		b, id := sealRaw(t, r.user, r.user.Public(), "alice", cmd)
		pos, err := r.log.Append(ctx, "alice", [][]byte{b})
		if err != nil {
			t.Fatal(err)
		}
		newer, newerIDs = append(newer, pos), append(newerIDs, id)
	}
	b, knownID := sealRaw(t, r.user, r.user.Public(), "alice", known)
	if _, err := r.log.Append(ctx, "alice", [][]byte{b}); err != nil {
		t.Fatal(err)
	}
	last := r.deliver(r.spool, msg(1))

	s, ms := r.device("a", nil, nil)
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	if st.Position != last || st.Alarm != "" {
		t.Fatalf("synced to position %d with alarm %q, want position %d and no alarm", st.Position, st.Alarm, last)
	}
	if _, msgs := inbox(t, ms); len(msgs) != 2 {
		t.Errorf("INBOX has %d messages, want both deliveries around the newer commands", len(msgs))
	}
	if _, err := ms.MailboxByName(ctx, "Known"); err != nil {
		t.Errorf("the hand-sealed CreateMailbox did not apply: %v", err)
	}
	rej, err := ms.Rejected(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[uint64]string{}
	for _, x := range rej {
		reasons[x.Pos] = string(x.Reason)
	}
	if len(rej) != len(newer) || st.Rejected != len(newer) {
		t.Errorf("rejected list %v, status counts %d; want positions %v", reasons, st.Rejected, newer)
	}
	for _, pos := range newer {
		if reasons[pos] != entry.ErrBadCommand.Error() {
			t.Errorf("position %d rejected as %q, want %q", pos, reasons[pos], entry.ErrBadCommand)
		}
	}
	seen, err := ms.EntriesSeen(ctx, append(newerIDs, knownID))
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range newerIDs {
		if p, ok := seen[id]; ok {
			t.Errorf("the entry at position %d is recorded as seen at %d; a command this device cannot decode leaves no id", newer[i], p)
		}
	}
	if _, ok := seen[knownID]; !ok {
		t.Errorf("the hand-sealed CreateMailbox's id is not recorded")
	}
}

// The reason recorded for an entry in a format the device does not read is
// the one the status report counts (mailstore.ReasonUnknownVersion), so
// that it can tell the user that an upgraded device shows that mail with a
// new database.
func TestUnknownVersionReason(t *testing.T) {
	_, err := entry.ParseHeader([]byte("CSPE\x09"))
	if !errors.Is(err, entry.ErrUnknownVersion) {
		t.Fatalf("a version 9 header: %v", err)
	}
	if got := rejectReason(err); got != string(mailstore.ReasonUnknownVersion) {
		t.Fatalf("rejection reason %q, want %q", got, mailstore.ReasonUnknownVersion)
	}
}
