package userdb

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"cspool/internal/keys"
)

func newKey(t *testing.T) keys.PublicKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func writeUsers(t *testing.T, path string, users map[string]keys.PublicKey) {
	t.Helper()
	s := "# users\n"
	for n, k := range users {
		s += n + " " + k.String() + "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFileMode(t *testing.T) {
	ctx := context.Background()
	alice, bob, stranger := newKey(t), newKey(t), newKey(t)
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, map[string]keys.PublicKey{"alice": alice, "bob": bob})
	db, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if db.TestMode() {
		t.Fatal("file mode DB says test mode")
	}
	tests := []struct {
		user string
		key  keys.PublicKey
		want error
	}{
		{"alice", alice, nil},
		{"bob", bob, nil},
		{"alice", bob, keys.ErrForbidden},
		{"carol", alice, keys.ErrForbidden},
		{"alice", stranger, ErrUnknownKey},
		{"carol", stranger, ErrUnknownKey},
	}
	for _, tc := range tests {
		err := db.Authorize(ctx, tc.user, tc.key)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("Authorize(%s, key %x) = %v, want %v", tc.user, tc.key.KeyID(), err, tc.want)
		}
		if cerr := db.Check(ctx, tc.user, tc.key); !errors.Is(cerr, tc.want) || (tc.want == nil) != (cerr == nil) {
			t.Errorf("Check(%s, key %x) = %v, want %v", tc.user, tc.key.KeyID(), cerr, tc.want)
		}
	}
	if k, err := db.Lookup(ctx, "alice"); err != nil || !k.Equal(alice) {
		t.Errorf("Lookup(alice) = %x, %v; want alice's key", k.KeyID(), err)
	}
	if _, err := db.Lookup(ctx, "carol"); !errors.Is(err, keys.ErrUnknownUser) {
		t.Errorf("Lookup(carol) error = %v, want ErrUnknownUser", err)
	}
	if err := db.Authorize(ctx, "bad name", alice); err == nil {
		t.Error("Authorize accepted an invalid user name")
	}
}

func TestReload(t *testing.T) {
	ctx := context.Background()
	alice, carol := newKey(t), newKey(t)
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, map[string]keys.PublicKey{"alice": alice})
	db, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeUsers(t, path, map[string]keys.PublicKey{"carol": carol})
	if err := db.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, err := db.Lookup(ctx, "alice"); !errors.Is(err, keys.ErrUnknownUser) {
		t.Errorf("after reload, alice: err = %v, want ErrUnknownUser", err)
	}
	if err := db.Authorize(ctx, "carol", carol); err != nil {
		t.Errorf("after reload, carol refused: %v", err)
	}
	// A broken file keeps the old table.
	if err := os.WriteFile(path, []byte("carol not-a-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err == nil {
		t.Fatal("Reload of a broken users file succeeded")
	}
	if err := db.Authorize(ctx, "carol", carol); err != nil {
		t.Errorf("after failed reload, carol refused: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err == nil {
		t.Fatal("Reload of a missing users file succeeded")
	}
	if db.Len() != 1 {
		t.Errorf("after failed reloads, %d users, want 1", db.Len())
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestTestMode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	alice, second, bob := newKey(t), newKey(t), newKey(t)
	db, err := OpenTestMode(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !db.TestMode() {
		t.Fatal("TestMode() = false")
	}
	if _, err := db.Lookup(ctx, "alice"); !errors.Is(err, keys.ErrUnknownUser) {
		t.Fatalf("Lookup before registration: %v, want ErrUnknownUser", err)
	}
	steps := []struct {
		user string
		key  keys.PublicKey
		want error
	}{
		{"alice", alice, nil},             // registers
		{"alice", alice, nil},             // known
		{"alice", second, ErrUnknownKey},  // name taken
		{"bob", alice, keys.ErrForbidden}, // a key owns one name
		{"bob", bob, nil},                 // registers
		{"alice", bob, keys.ErrForbidden},
	}
	for i, s := range steps {
		err := db.Authorize(ctx, s.user, s.key)
		if !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Errorf("step %d: Authorize(%s) = %v, want %v", i, s.user, err, s.want)
		}
	}
	info, err := os.Stat(filepath.Join(dir, TestUsersFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("registrations file mode %04o, want 0600", perm)
	}
	// A restart keeps the registrations.
	db2, err := OpenTestMode(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := db2.Lookup(ctx, "alice"); err != nil || !k.Equal(alice) {
		t.Errorf("after restart, Lookup(alice) = %x, %v", k.KeyID(), err)
	}
	if err := db2.Authorize(ctx, "alice", second); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("after restart, second key for alice: %v, want ErrUnknownKey", err)
	}
	if db2.Len() != 2 {
		t.Errorf("after restart, %d users, want 2", db2.Len())
	}
}

func TestTestModeRace(t *testing.T) {
	ctx := context.Background()
	db, err := OpenTestMode(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	ks := make([]keys.PublicKey, n)
	for i := range ks {
		ks[i] = newKey(t)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Authorize(ctx, "alice", ks[i])
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		if err == nil {
			won++
		} else if !errors.Is(err, ErrUnknownKey) {
			t.Errorf("key %d: %v, want nil or ErrUnknownKey", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d keys registered the same name, want 1", won)
	}
}

// TestCheckTestMode: Check says what Authorize would do, registering
// nothing: a free name and a key without one are ErrUnclaimed.
func TestCheckTestMode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	alice, other := newKey(t), newKey(t)
	db, err := OpenTestMode(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := db.Check(ctx, "alice", alice); !errors.Is(err, ErrUnclaimed) {
			t.Fatalf("Check of a free name: %v, want ErrUnclaimed", err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, TestUsersFile)); err != nil || len(b) != 0 || db.Len() != 0 {
		t.Fatalf("Check registered something: %d users, registrations file %q, %v; want an empty file", db.Len(), b, err)
	}
	if err := db.Authorize(ctx, "alice", alice); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		user string
		key  keys.PublicKey
		want error
	}{
		{"alice", alice, nil},
		{"alice", other, ErrUnknownKey},
		{"bob", alice, keys.ErrForbidden},
		{"bob", other, ErrUnclaimed},
	}
	for _, s := range steps {
		if err := db.Check(ctx, s.user, s.key); !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Errorf("Check(%s) = %v, want %v", s.user, err, s.want)
		}
	}
	if db.Len() != 1 {
		t.Errorf("%d users after the checks, want 1", db.Len())
	}
}

// TestRefuseSpoolKey: the spool's public key given to a user in the users
// file (a spool.pub pasted for user.pub) is refused at start and at a
// reload, which keeps the previous table: that user's mail would be sealed
// to the spool's key, readable by whoever holds the spool key. The error
// begins as every error about the users file does, "users file PATH: line
// N:", naming the line to fix; it named the file alone, without "users
// file" and without the line.
func TestRefuseSpoolKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users")
	gen := func() *keys.SecretKey {
		k, err := keys.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	alice, spool := gen(), gen()
	write := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice " + alice.Public().String() + "\nbob " + spool.Public().String() + "\n")
	d, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Refuse(spool.Public(), "the spool's public key"); !errors.Is(err, ErrRefusedKey) ||
		!strings.Contains(err.Error(), `"bob"`) || !strings.HasPrefix(err.Error(), "users file "+path+": line 2: ") {
		t.Fatalf("Refuse over a table giving bob the spool's key: %v, want ErrRefusedKey naming bob, starting \"users file %s: line 2: \"", err, path)
	}
	write("alice " + alice.Public().String() + "\n")
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	write("alice " + alice.Public().String() + "\n\n# carol, new\ncarol " + spool.Public().String() + "\n")
	if err := d.Reload(); !errors.Is(err, ErrRefusedKey) || !strings.Contains(err.Error(), `"carol"`) || !strings.Contains(err.Error(), "users file "+path+": line 4: ") {
		t.Fatalf("Reload giving carol the spool's key: %v, want ErrRefusedKey naming carol and \"users file %s: line 4\"", err, path)
	}
	if _, err := d.Lookup(context.Background(), "carol"); !errors.Is(err, keys.ErrUnknownUser) {
		t.Fatalf("carol after the refused reload: %v, want unknown (the previous table kept)", err)
	}
	if k, err := d.Lookup(context.Background(), "alice"); err != nil || !k.Equal(alice.Public()) {
		t.Fatalf("alice after the refused reload: %v", err)
	}
}

// TestLookupFolded: a user is found by its name folded to lower case
// (ASCII only), for an address a mail server folded.
func TestLookupFolded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	carol := newKey(t)
	writeUsers(t, path, map[string]keys.PublicKey{"Carol": carol, "bob": newKey(t)})
	db, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	name, k, err := db.LookupFolded(context.Background(), "carol")
	if err != nil || name != "Carol" || !k.Equal(carol) {
		t.Errorf("LookupFolded(carol) = %q, %v, want Carol and her key", name, err)
	}
	if _, _, err := db.LookupFolded(context.Background(), "dave"); !errors.Is(err, keys.ErrUnknownUser) {
		t.Errorf("LookupFolded(dave): %v, want ErrUnknownUser", err)
	}
}

// TestReloadKeyMoved: a reload that gives a user the key another user,
// still listed, has now (the keys of two lines swapped; bob's old key
// pasted on alice's line as bob got a new one) is refused, naming the
// file, the line and both users, and the table in force is kept: it was
// taken, and bob's key read and wrote alice's log from then on. A key
// that moves with its user renamed (bob's line gone, robert's holding
// its key) is taken, as is a user given a new key.
func TestReloadKeyMoved(t *testing.T) {
	ctx := context.Background()
	alice, bob, bob2, carol := newKey(t), newKey(t), newKey(t), newKey(t)
	path := filepath.Join(t.TempDir(), "users")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice " + alice.String() + "\nbob " + bob.String() + "\n")
	db, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ what, text, line string }{
		{"swapped", "alice " + bob.String() + "\nbob " + alice.String() + "\n", `line 1: user "alice" has the key user "bob" had`},
		{"bob's old key on alice's line", "# new key for bob\nalice " + bob.String() + "\nbob " + bob2.String() + "\n", `line 2: user "alice" has the key user "bob" had`},
		{"carol given alice's while alice gets a new one", "alice " + carol.String() + "\nbob " + bob.String() + "\ncarol " + alice.String() + "\n", `line 3: user "carol" has the key user "alice" had`},
	} {
		write(tc.text)
		err := db.Reload()
		if !errors.Is(err, ErrKeyMoved) || !strings.Contains(err.Error(), "users file "+path+": "+tc.line) {
			t.Errorf("%s: Reload: %v, want ErrKeyMoved saying %q", tc.what, err, tc.line)
		}
		if err := db.Authorize(ctx, "alice", bob); !errors.Is(err, keys.ErrForbidden) {
			t.Errorf("%s: bob's key on alice's log after the refused reload: %v, want ErrForbidden", tc.what, err)
		}
		if err := db.Authorize(ctx, "alice", alice); err != nil {
			t.Errorf("%s: alice's key on alice's log after the refused reload: %v", tc.what, err)
		}
	}
	write("alice " + alice.String() + "\nrobert " + bob.String() + "\n")
	if err := db.Reload(); err != nil {
		t.Fatalf("bob renamed robert: %v", err)
	}
	write("alice " + alice.String() + "\nrobert " + bob2.String() + "\n")
	if err := db.Reload(); err != nil {
		t.Fatalf("robert given a new key: %v", err)
	}
	if err := db.Authorize(ctx, "robert", bob2); err != nil {
		t.Errorf("robert's new key: %v", err)
	}
}

// TestReloadNoUsers: a reload of a users file emptied (truncated, or
// holding comments alone) is refused while the table in force has users,
// which keep their keys: it was taken, and every user's mail bounced as
// an unknown user's. A file of users none of which were listed is taken.
func TestReloadNoUsers(t *testing.T) {
	ctx := context.Background()
	alice, carol := newKey(t), newKey(t)
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, map[string]keys.PublicKey{"alice": alice})
	db, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"", "# users\n\n"} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := db.Reload(); !errors.Is(err, ErrNoUsers) || !strings.Contains(err.Error(), "users file "+path+": ") {
			t.Errorf("Reload of a users file %q: %v, want ErrNoUsers naming the file", text, err)
		}
		if err := db.Authorize(ctx, "alice", alice); err != nil {
			t.Errorf("alice after the refused reload of %q: %v", text, err)
		}
	}
	writeUsers(t, path, map[string]keys.PublicKey{"carol": carol})
	if err := db.Reload(); err != nil {
		t.Errorf("Reload of a users file of carol alone: %v", err)
	}
}
