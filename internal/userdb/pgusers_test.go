package userdb

import (
	"context"
	"errors"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore/pgtest"
)

func TestPGUsers(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t))
	db, err := OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatalf("OpenPG: %v", err)
	}
	defer db.Close()
	again, err := OpenPG(ctx, dsn, 0, nil) // the table exists already
	if err != nil {
		t.Fatalf("second OpenPG: %v", err)
	}
	again.Close()

	alice, bob, stranger := newKey(t), newKey(t), newKey(t)
	for name, k := range map[string]string{"alice": alice.String(), "bob": " " + bob.String() + "\n", "broken": "cspool-pub-1:nonsense"} {
		if _, err := db.pool.Exec(ctx, "INSERT INTO cspool_users (name, public_key) VALUES ($1, $2)", name, k); err != nil {
			t.Fatal(err)
		}
	}
	if db.TestMode() || db.Len() != 3 {
		t.Errorf("TestMode %v, Len %d; want false, 3", db.TestMode(), db.Len())
	}
	if k, err := db.Lookup(ctx, "bob"); err != nil || !k.Equal(bob) {
		t.Errorf("Lookup(bob): %v, %v; want bob's key", k, err)
	}
	if _, err := db.Lookup(ctx, "carol"); !errors.Is(err, keys.ErrUnknownUser) {
		t.Errorf("Lookup(carol): %v, want ErrUnknownUser", err)
	}
	if _, err := db.Lookup(ctx, "broken"); err == nil || errors.Is(err, keys.ErrUnknownUser) {
		t.Errorf("Lookup(broken): %v, want a key error", err)
	}
	for _, tc := range []struct {
		user string
		key  keys.PublicKey
		want error
	}{
		{"alice", alice, nil},
		{"bob", bob, nil},
		{"bob", alice, keys.ErrForbidden},
		{"carol", alice, keys.ErrForbidden},
		{"alice", stranger, ErrUnknownKey},
		{"carol", stranger, ErrUnknownKey},
	} {
		err := db.Authorize(ctx, tc.user, tc.key)
		if (tc.want == nil) != (err == nil) || !errors.Is(err, tc.want) {
			t.Errorf("Authorize(%s): %v, want %v", tc.user, err, tc.want)
		}
	}
	if err := db.Authorize(ctx, "broken", stranger); err == nil {
		t.Error("Authorize(broken) succeeded with a damaged key in the table")
	}
	// A row added with SQL counts at once, without Reload.
	if _, err := db.pool.Exec(ctx, "INSERT INTO cspool_users VALUES ('carol', $1)", stranger.String()); err != nil {
		t.Fatal(err)
	}
	if err := db.Authorize(ctx, "carol", stranger); err != nil {
		t.Errorf("Authorize(carol) after the insert: %v", err)
	}
}

func TestPGUsersUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Port 1 on localhost: nothing listens, the connection is refused.
	_, err := OpenPG(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", 0, nil)
	if !errors.Is(err, spool.ErrUnavailable) {
		t.Errorf("OpenPG with no server: %v, want ErrUnavailable", err)
	}
}
