package userdb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore/pgtest"

	"github.com/jackc/pgx/v5"
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

// TestPGUsersRefused: the users table keeps the users file's rules. A table
// that gives two users one key (made before the rule) is refused at open,
// naming both; a row inserted later with another user's key is refused by
// PostgreSQL; a row holding the spool's key (Refuse) is reported at once and
// at a Reload, and its user's lookups fail, so nothing is sealed to the
// spool's key. Before, the table checked neither.
func TestPGUsersRefused(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t))
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	alice, bob, spoolKey := newKey(t), newKey(t), newKey(t)
	if _, err := conn.Exec(ctx, usersTableSQL); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	}
	if err := exec("INSERT INTO cspool_users VALUES ('alice', $1), ('bob', $2)", alice.String(), " "+alice.String()+"\n"); err != nil {
		t.Fatal(err)
	}
	if db, err := OpenPG(ctx, dsn, 0, nil); !errors.Is(err, keys.ErrSharedKey) ||
		!strings.Contains(err.Error(), `"alice"`) || !strings.Contains(err.Error(), `"bob"`) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("OpenPG on a table giving alice's key to bob: %v, want ErrSharedKey naming both", err)
	}
	if err := exec("UPDATE cspool_users SET public_key = $1 WHERE name = 'bob'", bob.String()); err != nil {
		t.Fatal(err)
	}
	db, err := OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatalf("OpenPG after the fix: %v", err)
	}
	defer db.Close()
	if err := exec("INSERT INTO cspool_users VALUES ('carol', $1)", bob.String()+" "); err == nil {
		t.Error("a row giving carol bob's key was inserted, want it refused")
	}
	if err := exec("INSERT INTO cspool_users VALUES ('dave', $1)", spoolKey.String()); err != nil {
		t.Fatal(err)
	}
	if err := db.Refuse(spoolKey, "the spool's public key"); !errors.Is(err, ErrRefusedKey) || !strings.Contains(err.Error(), `"dave"`) {
		t.Errorf("Refuse with dave holding the spool's key: %v, want ErrRefusedKey naming dave", err)
	}
	if err := exec("DELETE FROM cspool_users WHERE name = 'dave'"); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err != nil {
		t.Fatalf("Reload of a table keeping the rules: %v", err)
	}
	// A row inserted while the server runs counts at once: so does the rule.
	if err := exec("INSERT INTO cspool_users VALUES ('erin', $1)", spoolKey.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Lookup(ctx, "erin"); !errors.Is(err, ErrRefusedKey) {
		t.Errorf("Lookup(erin), holding the spool's key: %v, want ErrRefusedKey", err)
	}
	if err := db.Authorize(ctx, "erin", spoolKey); err == nil {
		t.Error("Authorize(erin) with the spool's key succeeded")
	}
	if err := db.Reload(); !errors.Is(err, ErrRefusedKey) || !strings.Contains(err.Error(), `"erin"`) {
		t.Errorf("Reload with erin holding the spool's key: %v, want ErrRefusedKey naming erin", err)
	}
	if k, err := db.Lookup(ctx, "alice"); err != nil || !k.Equal(alice) {
		t.Errorf("Lookup(alice): %v, %v", k, err)
	}
}

// TestPGUsersThroughPgBouncer: the users table through PgBouncer in session
// mode, on the schema of the DSN's search_path. PgBouncer refuses the
// startup parameter search_path (so OpenPG failed), and told to ignore it
// drops it, and the table went to public; now it is set by SQL.
func TestPGUsersThroughPgBouncer(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.Database(t))
	schema := dsn[strings.LastIndex(dsn, "search_path=")+len("search_path="):]
	schema, _, _ = strings.Cut(schema, "&")
	// With server_reset_query empty a new client gets the last one's
	// session as it was, prepared statements included.
	for _, settings := range [][]string{nil, {"ignore_startup_parameters = search_path"}, {"server_reset_query ="}} {
		b := pgtest.StartBouncer(t, pgtest.BouncerConfig{Mode: "session", Settings: settings})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		first, err := OpenPG(ctx, b.DSN(dsn), 0, nil)
		if err != nil {
			t.Fatalf("OpenPG through PgBouncer %q: %v", settings, err)
		}
		first.Close() // as a server restarting
		db, err := OpenPG(ctx, b.DSN(dsn), 0, nil)
		if err != nil {
			t.Fatalf("OpenPG through PgBouncer %q: %v", settings, err)
		}
		var got string
		err = db.pool.QueryRow(ctx, "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = 'cspool_users'::regclass").Scan(&got)
		db.Close()
		if err != nil || got != schema {
			t.Errorf("through PgBouncer %q the users table is in schema %q (%v), want the DSN's %q", settings, got, err, schema)
		}
	}
}

// TestPGUsersKeyMoved: the users table refuses what a users file's reload
// refuses (TestReloadKeyMoved), in the operator's own SQL session: a row
// given the key another user, still listed, was given last (two users'
// keys swapped in one transaction of three UPDATEs; bob's old key put on
// alice's row after bob got a new one; carol given alice's key as alice
// gets a new one). Each was taken, the unique index seeing each key in one
// row alone, and bob's key read and wrote alice's log at once on every
// server. A key that moves with its user renamed, by UPDATE of the name or
// a row deleted and another inserted, is taken, as is a new key.
func TestPGUsersKeyMoved(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t))
	db, err := OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatalf("OpenPG: %v", err)
	}
	defer db.Close()
	op, err := pgx.Connect(ctx, dsn) // the operator's psql
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close(ctx)
	alice, alice2, bob, bob2, carol := newKey(t), newKey(t), newKey(t), newKey(t), newKey(t)
	exec := func(sql string, args ...any) error {
		_, err := op.Exec(ctx, sql, args...)
		return err
	}
	if err := exec("INSERT INTO cspool_users VALUES ('alice', $1), ('bob', $2)", alice.String(), bob.String()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what  string
		sql   []string
		args  [][]any
		moved string
	}{
		{"swapped", []string{"BEGIN", "UPDATE cspool_users SET public_key = 'none' WHERE name = 'alice'",
			"UPDATE cspool_users SET public_key = $1 WHERE name = 'bob'", "UPDATE cspool_users SET public_key = $1 WHERE name = 'alice'", "COMMIT"},
			[][]any{nil, nil, {alice.String()}, {bob.String()}, nil}, `user 'bob' has the key user 'alice' had`},
		{"bob's old key on alice's row", []string{"UPDATE cspool_users SET public_key = $1 WHERE name = 'bob'", "UPDATE cspool_users SET public_key = $1 WHERE name = 'alice'"},
			[][]any{{bob2.String()}, {" " + bob.String() + "\n"}}, `user 'alice' has the key user 'bob' had`},
		{"carol given alice's as alice gets a new one", []string{"UPDATE cspool_users SET public_key = $1 WHERE name = 'alice'", "INSERT INTO cspool_users VALUES ('carol', $1)"},
			[][]any{{alice2.String()}, {alice.String()}}, `user 'carol' has the key user 'alice' had`},
	} {
		var err error
		for i, sql := range tc.sql {
			if err = exec(sql, tc.args[i]...); err != nil {
				break
			}
		}
		exec("ROLLBACK")
		if err == nil || !strings.Contains(err.Error(), tc.moved) || !strings.Contains(err.Error(), ErrKeyMoved.Error()) {
			t.Errorf("%s: %v, want it refused saying %q", tc.what, err, tc.moved)
		}
		if err := db.Authorize(ctx, "alice", bob); err == nil {
			t.Errorf("%s: bob's key reaches alice's log", tc.what)
		}
	}
	if k, err := db.Lookup(ctx, "alice"); err != nil || !k.Equal(alice2) {
		t.Errorf("Lookup(alice) after her new key: %v, want alice2's key", err)
	}
	for _, sql := range []string{
		"UPDATE cspool_users SET name = 'robert' WHERE name = 'bob'", // bob2's key, renamed
		"DELETE FROM cspool_users WHERE name = 'robert'",
	} {
		if err := exec(sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := exec("INSERT INTO cspool_users VALUES ('rob', $1), ('carol', $2)", bob2.String(), carol.String()); err != nil {
		t.Fatalf("robert's key given to rob, robert gone: %v", err)
	}
	if err := db.Authorize(ctx, "rob", bob2); err != nil {
		t.Errorf("Authorize(rob) with the key robert had: %v", err)
	}
}

// TestLedgerKeyMoved: servers of one PostgreSQL store, each reading a
// users file of its own, keep in cspool_user_keys the user each key was
// last given (UseLedger). A server restarted on a file whose keys of
// alice and bob are swapped, and a second server given such a file, are
// refused, naming the line and both users: each took the file, the
// restart with no table to compare, the second server with a table of
// its own, and bob's key read alice's log through either. A rename
// (bob's line gone, robert's holding its key) is taken, on one server's
// reload, then the other's.
func TestLedgerKeyMoved(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t))
	pg, err := OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatalf("OpenPG: %v", err)
	}
	defer pg.Close()
	alice, bob := newKey(t), newKey(t)
	dir := t.TempDir()
	file := func(name, text string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	right := "alice " + alice.String() + "\nbob " + bob.String() + "\n"
	swapped := "alice " + bob.String() + "\nbob " + alice.String() + "\n"
	const says = `line 1: user "alice" has the key user "bob" was last given`
	server := func(path string) (*DB, error) {
		t.Helper()
		db, err := Load(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return db, db.UseLedger(ctx, pg)
	}
	a, err := server(file("a", right))
	if err != nil {
		t.Fatalf("server A on the right file: %v", err)
	}
	for _, tc := range []struct{ what, file string }{{"server A restarted on the swapped file", "a"}, {"server B on the swapped file", "b"}} {
		_, err := server(file(tc.file, swapped))
		if !errors.Is(err, ErrKeyMoved) || !strings.Contains(err.Error(), says) {
			t.Errorf("%s: %v, want ErrKeyMoved saying %q", tc.what, err, says)
		}
	}
	b, err := server(file("b", right))
	if err != nil {
		t.Fatalf("server B on the right file: %v", err)
	}
	if err := b.Authorize(ctx, "alice", bob); err == nil {
		t.Error("bob's key reaches alice's log through server B")
	}
	file("b", "alice "+alice.String()+"\nrobert "+bob.String()+"\n")
	if err := b.Reload(); err != nil {
		t.Fatalf("server B, bob renamed robert: %v", err)
	}
	file("a", "alice "+alice.String()+"\nrobert "+bob.String()+"\n")
	if err := a.Reload(); err != nil {
		t.Fatalf("server A, bob renamed robert: %v", err)
	}
}

// TestPGUsersKeyMovedTriggerEnabled: a table whose trigger
// cspool_users_key_moved was disabled (a load of rows with pg_restore
// --disable-triggers, or by hand, left so) has it enabled again by the
// next OpenPG, which refuses bob given alice's key as she gets a new one.
// OpenPG made the trigger only when it was missing, so the swap was taken.
func TestPGUsersKeyMovedTriggerEnabled(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t))
	db, err := OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatalf("OpenPG: %v", err)
	}
	db.Close()
	op, err := pgx.Connect(ctx, dsn) // the operator's psql
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close(ctx)
	alice, alice2, bob := newKey(t), newKey(t), newKey(t)
	for _, sql := range []string{
		"INSERT INTO cspool_users VALUES ('alice', '" + alice.String() + "'), ('bob', '" + bob.String() + "')",
		"ALTER TABLE cspool_users DISABLE TRIGGER cspool_users_key_moved",
	} {
		if _, err := op.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	db, err = OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatalf("OpenPG: %v", err)
	}
	defer db.Close()
	if _, err := op.Exec(ctx, "UPDATE cspool_users SET public_key = $1 WHERE name = 'alice'", alice2.String()); err != nil {
		t.Fatal(err)
	}
	_, err = op.Exec(ctx, "UPDATE cspool_users SET public_key = $1 WHERE name = 'bob'", alice.String())
	if err == nil || !strings.Contains(err.Error(), "user 'bob' has the key user 'alice' had") {
		t.Errorf("bob given alice's old key: %v, want it refused", err)
	}
	if err := db.Authorize(ctx, "bob", alice); err == nil {
		t.Error("alice's old key reaches bob's log")
	}
}
