package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	sp "cspool/internal/spool"
)

// TestDeliveryRecipient: the spool key appends only entries sealed to the
// key registered for the log's user, and only to users; anything else is
// refused with nothing appended, and no log is created for a name that is
// not a user.
func TestDeliveryRecipient(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	spool := e.client(t, "", e.spoolK)
	seal := func(to keys.PublicKey, user, msg string) []byte {
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1, Body: []byte(msg)}, e.spoolK, to, user, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if first, err := spool.Append(ctx, "alice", [][]byte{e.delivery(t, "alice", "first")}); err != nil || first != 1 {
		t.Fatalf("delivery sealed to alice's key: first %d, %v; want 1", first, err)
	}
	for _, c := range []struct {
		name  string
		user  string
		batch [][]byte
		want  error
		code  int
	}{
		{"sealed to bob's key", "alice", [][]byte{seal(e.bob.Public(), "alice", "mixed up")}, ErrWrongKey, http.StatusUnprocessableEntity},
		{"sealed to a key nobody has", "alice", [][]byte{seal(e.stranger.Public(), "alice", "stale key")}, ErrWrongKey, http.StatusUnprocessableEntity},
		{"one good entry, one not", "alice", [][]byte{e.delivery(t, "alice", "ok"), seal(e.bob.Public(), "alice", "no")}, ErrWrongKey, http.StatusUnprocessableEntity},
		{"not an entry", "alice", [][]byte{[]byte("From: x\r\n\r\nplain text\r\n")}, ErrWrongKey, http.StatusUnprocessableEntity},
		{"empty entry", "alice", [][]byte{{}}, ErrWrongKey, http.StatusUnprocessableEntity},
		{"no such user", "carol", [][]byte{seal(e.alice.Public(), "carol", "to nobody")}, keys.ErrUnknownUser, http.StatusNotFound},
	} {
		_, err := spool.Append(ctx, c.user, c.batch)
		var ae *Error
		if !errors.Is(err, c.want) || !errors.As(err, &ae) || ae.Status != c.code {
			t.Errorf("%s: append error %v, want %v (HTTP %d)", c.name, err, c.want, c.code)
		}
		if IsTemporary(err) {
			t.Errorf("%s: %v is temporary; a retry cannot help", c.name, err)
		}
	}
	for user, want := range map[string]uint64{"alice": 1, "carol": 0} {
		if h, err := e.store.Head(ctx, user); err != nil || h != want {
			t.Errorf("head of %s after the refusals: %d, %v; want %d", user, h, err, want)
		}
	}
	// A user's own key appends what its device seals: not checked here
	// (the device seals to the key that signs the request).
	if _, err := e.client(t, "alice", e.alice).Append(ctx, "alice", [][]byte{[]byte("device command")}); err != nil {
		t.Errorf("alice's own append: %v", err)
	}
}

// TestDeliveryRecipientTestMode: in test mode a name nobody registered has
// no key to check against and takes any delivery; a registered name is
// checked.
func TestDeliveryRecipientTestMode(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := testCtx(t)
	if _, err := e.client(t, "alice", e.alice).Head(ctx); err != nil { // registers alice
		t.Fatal(err)
	}
	spool := e.client(t, "", e.spoolK)
	good, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1, Body: []byte("hi")}, e.spoolK, e.alice.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	wrong, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1, Body: []byte("hi")}, e.spoolK, e.bob.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := spool.Append(ctx, "alice", [][]byte{good}); err != nil {
		t.Errorf("delivery to registered alice: %v", err)
	}
	if _, err := spool.Append(ctx, "alice", [][]byte{wrong}); !errors.Is(err, ErrWrongKey) {
		t.Errorf("delivery to registered alice sealed to bob's key: %v, want %v", err, ErrWrongKey)
	}
	if _, err := spool.Append(ctx, "newcomer", [][]byte{wrong}); err != nil {
		t.Errorf("test mode delivery to an unregistered name: %v, want it taken", err)
	}
	if _, err := e.users.Lookup(context.Background(), "newcomer"); err == nil {
		t.Error("a delivery registered its user")
	}
}

// TestDeliveryQuota: with a quota, a delivery that would take the log past
// it gets 507 (temporary) and appends nothing; the user's own appends
// count but are never refused, so the user can always delete and compact;
// a delivery may not name if_head.
func TestDeliveryQuota(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.Quota = 4000 })
	ctx := testCtx(t)
	spool := e.client(t, "", e.spoolK)
	mail := e.delivery(t, "alice", strings.Repeat("m", 1500))
	if _, err := spool.Append(ctx, "alice", [][]byte{mail, mail}); err != nil {
		t.Fatalf("two deliveries within the quota: %v", err)
	}
	_, err := spool.Append(ctx, "alice", [][]byte{mail})
	var ae *Error
	if !errors.Is(err, ErrOverQuota) || !errors.Is(err, sp.ErrOverQuota) || !IsTemporary(err) || !errors.As(err, &ae) ||
		ae.Status != http.StatusInsufficientStorage {
		t.Fatalf("a delivery past the quota: %v, want a temporary 507", err)
	}
	alice := e.client(t, "alice", e.alice)
	if _, err := alice.Append(ctx, "alice", [][]byte{make([]byte, 5000)}); err != nil {
		t.Fatalf("alice's own append over the quota: %v, want it taken", err)
	}
	if h, err := e.store.Head(ctx, "alice"); err != nil || h != 3 {
		t.Fatalf("head %d, %v; want 3", h, err)
	}
	if _, err := spool.Append(ctx, "bob", [][]byte{e.delivery(t, "bob", "hi")}); err != nil {
		t.Errorf("a delivery to bob, whose log has room: %v", err)
	}
	resp, _ := e.send(t, rawRequest{method: "POST", path: "/v1/users/bob/entries", query: "if_head=1",
		body: EncodeBatch([][]byte{e.delivery(t, "bob", "x")}), key: e.spoolK})
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a delivery with if_head: status %d, want 400", resp.StatusCode)
	}
}
