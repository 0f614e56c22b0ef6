// Package userdb is the spool server's user database: which public key owns
// which user's log.
//
// Implementation notes and invariants:
//
//   - A DB runs in one of two modes, fixed at construction. File mode reads a
//     users file (keys.LoadUsers: "NAME PUBLIC-KEY" lines); Reload re-reads
//     it and swaps the table atomically, and a reload that fails keeps the
//     old table; so does one that would give a user the key of another
//     user still listed (ErrKeyMoved), or leave none (ErrNoUsers). With
//     a Ledger (UseLedger: a PostgreSQL store's cspool_user_keys, shared
//     by its servers) the table in force and every reload are also
//     checked against the user each key was last given by any server,
//     and recorded there, so a restart or another server's file cannot
//     move a key to another user still listed either. Test
//     mode has no users file: the first key that authenticates as a name
//     is registered to it, and the registrations are appended to a file in
//     the spool directory (same format as a users file, mode 0600, fsync'd
//     before the registration takes effect) so a restart keeps them. Test
//     mode is logged loudly at start and at every registration: anybody
//     who can reach the server can claim a free name. The registrations
//     file is created at open, so its presence marks a spool directory in
//     test mode.
//   - A name maps to exactly one key. In test mode a key owns at most one
//     name, so a registered key can never reach a second log.
//   - Authorize distinguishes an unknown key (ErrUnknownKey: HTTP 401) from
//     a known key that belongs to another user (keys.ErrForbidden: HTTP 403).
//     Check decides the same from the table alone, without registering: the
//     API asks it before verifying a signature, so that a request signed
//     with a key nobody registered costs a table lookup and changes nothing.
//     Lookup of a name without a key returns keys.ErrUnknownUser (LMTP 550 5.1.1,
//     RFC 5321 section 4.2.2 / RFC 3463 X.1.1).
//   - The table is read under a read lock; lookups never touch the disk.
package userdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"cspool/internal/keys"
)

// Errors returned by DB methods, wrapped with the user name: test with
// errors.Is.
// The unknown user and the forbidden key are keys.ErrUnknownUser and
// keys.ErrForbidden, which the API and delivery answer with.
var (
	// ErrUnknownKey: the key belongs to no user (and, in test mode, the name
	// it claims is already registered to another key).
	ErrUnknownKey = errors.New("unknown key")
	// ErrUnclaimed (from Check, in test mode only): the name has no key and
	// the key owns no name, so Authorize would register the name to the key.
	ErrUnclaimed = errors.New("name unclaimed")
)

// TestUsersFile is the name of the test mode registrations file inside the
// spool directory.
const TestUsersFile = "test-users"

// DB maps user names to public keys. It is safe for concurrent use.
type DB struct {
	log      *slog.Logger
	path     string // users file (file mode) or registrations file (test mode)
	testMode bool

	mu       sync.RWMutex
	byName   keys.Users
	lines    keys.Lines        // the line of the file each user is on
	byFolded map[string]string // keys.FoldCase(name) -> name, for names no other folds to
	byKey    map[string]string // key bytes -> name; only meaningful in test mode
	regMu    sync.Mutex        // serialises test mode registrations (file appends)

	refused map[string]string // key bytes -> what the key is (Refuse); under mu
	ledger  Ledger            // UseLedger; under mu
}

// Ledger keeps, beyond one process, the user each key was last given:
// the table cspool_user_keys of a PostgreSQL store (PG), shared by the
// servers of that store, each reading a users file of its own.
type Ledger interface {
	// LastUsers returns, by key text, the user each key was last given;
	// a key never given is absent.
	LastUsers(ctx context.Context, ks []keys.PublicKey) (map[string]string, error)
	// RecordUsers records each key of users as last given to its user.
	RecordUsers(ctx context.Context, users keys.Users) error
}

// ledgerTimeout bounds a Ledger's check and record at a reload.
const ledgerTimeout = 30 * time.Second

// UseLedger makes d check the table in force, and every reload, against
// l and record each in l: a users file that gives a user the key another
// user it still lists was last given by any server of l (or by this one
// before a restart) is refused as a reload is (ErrKeyMoved). It returns
// the table in force's refusal, if any.
func (d *DB) UseLedger(ctx context.Context, l Ledger) error {
	d.mu.RLock()
	users, lines := d.byName, d.lines
	d.mu.RUnlock()
	if err := CheckLedger(ctx, l, d.path, users, lines); err != nil {
		return err
	}
	if err := l.RecordUsers(ctx, users); err != nil {
		return &keys.UsersFileError{Path: d.path, Err: err}
	}
	d.mu.Lock()
	d.ledger = l
	d.mu.Unlock()
	return nil
}

// CheckLedger returns an error wrapping ErrKeyMoved, naming the users
// file at path, the line and both users, if users (read from it) gives a
// user the key l says was last given to another user that users still
// lists: a reload's check (checkMoved) against every server of l.
func CheckLedger(ctx context.Context, l Ledger, path string, users keys.Users, lines keys.Lines) error {
	ks := make([]keys.PublicKey, 0, len(users))
	for _, k := range users {
		ks = append(ks, k)
	}
	last, err := l.LastUsers(ctx, ks)
	if err != nil {
		return &keys.UsersFileError{Path: path, Err: err}
	}
	first := 0
	for name, k := range users {
		had, ok := last[k.String()]
		if !ok || had == name {
			continue
		}
		if _, still := users[had]; still && (err == nil || lines[name] < first) {
			first = lines[name]
			err = &keys.UsersFileError{Path: path, Err: fmt.Errorf("line %d: user %q has the key user %q was last given (by this server before a restart, or by another server of the store), and %q is still listed (line %d): %w",
				first, name, had, had, lines[had], ErrKeyMoved)}
		}
	}
	return err
}

// ErrRefusedKey: the users file gives a user a key that is no user's to
// have (Refuse), such as the spool's own public key.
var ErrRefusedKey = errors.New("a key that is no user's to have")

// Refuse makes d refuse key as any user's key, what naming it in errors
// ("the spool's public key"): it returns an error wrapping ErrRefusedKey if
// the table gives it to a user now, and a Reload that would fails, keeping
// the previous table. The spool's public key as a user's would seal that
// user's mail to the spool, which could then read it.
func (d *DB) Refuse(key keys.PublicKey, what string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refused == nil {
		d.refused = map[string]string{}
	}
	d.refused[string(key.Bytes())] = what
	return d.checkRefused(d.byName, d.lines)
}

// RefusedKeyError: the users file gives User, on Line, a key Refuse
// named What. It is ErrRefusedKey.
type RefusedKeyError struct {
	Line       int
	User, What string
}

func (e *RefusedKeyError) Error() string {
	return fmt.Sprintf("line %d: user %q has %s: %v", e.Line, e.User, e.What, ErrRefusedKey)
}

func (e *RefusedKeyError) Unwrap() error { return ErrRefusedKey }

// checkRefused returns an error naming the file, the line and the user
// users gives a refused key (the first such line). d.mu is held.
func (d *DB) checkRefused(users keys.Users, lines keys.Lines) error {
	var err error
	first := 0
	for name, k := range users {
		if what, ok := d.refused[string(k.Bytes())]; ok && (err == nil || lines[name] < first) {
			first = lines[name]
			err = &keys.UsersFileError{Path: d.path, Err: &RefusedKeyError{Line: first, User: name, What: what}}
		}
	}
	return err
}

// ErrKeyMoved: a reload would give a user the key another user, still
// listed, has in the table in force: two lines' keys swapped, or one
// user's key pasted on another's line as that user's got a new one.
// Whoever holds the key would read and write the other user's log from
// then on, and that user's mail would be sealed to it.
var ErrKeyMoved = errors.New(keyMovedText)

// checkMoved returns an error naming the file, the line and both users
// if users gives a user a key that another user, listed in users too,
// has in the table in force (the first such line). d.mu is held.
func (d *DB) checkMoved(users keys.Users, lines keys.Lines) error {
	var err error
	first := 0
	for name, k := range users {
		had, ok := d.byKey[string(k.Bytes())]
		if !ok || had == name {
			continue
		}
		if _, still := users[had]; still && (err == nil || lines[name] < first) {
			first = lines[name]
			err = &keys.UsersFileError{Path: d.path, Err: fmt.Errorf("line %d: user %q has the key user %q had until this reload, and %q is still listed (line %d): %w",
				first, name, had, had, lines[had], ErrKeyMoved)}
		}
	}
	return err
}

// ErrNoUsers: a reload would leave no user at all, where the table in
// force has some: the file emptied, or truncated by an editor or a copy
// that failed. Every user would have its mail bounced as an unknown
// user's (LMTP 550) and its devices refused.
var ErrNoUsers = errors.New("it lists no user, and every user of the table in force would have its mail bounced as an unknown user's: to serve no user, stop the server")

// checkKept returns an error wrapping ErrNoUsers if users is empty and
// the table in force is not. d.mu is held.
func (d *DB) checkKept(users keys.Users) error {
	if len(users) > 0 || len(d.byName) == 0 {
		return nil
	}
	return &keys.UsersFileError{Path: d.path, Err: fmt.Errorf("%d users before: %w", len(d.byName), ErrNoUsers)}
}

// Load opens a DB in file mode on the users file at path.
func Load(path string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := &DB{log: log, path: path}
	users, lines, err := keys.LoadUsersLines(path)
	if err != nil {
		return nil, fmt.Errorf("loading users: %w", err)
	}
	d.set(users, lines)
	log.Info("users file loaded", "file", path, "users", len(users))
	return d, nil
}

// OpenTestMode opens a DB in test mode, keeping registrations in
// dir/test-users (created on the first registration).
func OpenTestMode(dir string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := &DB{log: log, path: filepath.Join(dir, TestUsersFile), testMode: true}
	users, lines, err := d.loadRegistrations()
	if err != nil {
		return nil, err
	}
	// The file, empty until the first registration, also marks the spool
	// as one in test mode: cspool deliver straight into the directory
	// checks its users there (docs/DELIVERY.md).
	if err := appendLine(d.path, ""); err != nil {
		return nil, fmt.Errorf("creating the test mode registrations file: %w", err)
	}
	d.set(users, lines)
	log.Warn("TEST MODE: no users file; the first key to authenticate as a name is registered to it; do not expose this server",
		"registrations", d.path, "registered", len(users))
	return d, nil
}

func (d *DB) loadRegistrations() (keys.Users, keys.Lines, error) {
	users, lines, err := keys.LoadUsersLines(d.path)
	if errors.Is(err, os.ErrNotExist) {
		return keys.Users{}, keys.Lines{}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("loading test mode registrations: %w", err)
	}
	return users, lines, nil
}

// TestMode reports whether d registers unknown names on first use.
func (d *DB) TestMode() bool { return d.testMode }

// Path returns the users file (file mode) or the registrations file (test
// mode).
func (d *DB) Path() string { return d.path }

// Len returns the number of users.
func (d *DB) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.byName)
}

func (d *DB) set(users keys.Users, lines keys.Lines) {
	byKey := make(map[string]string, len(users))
	byFolded := make(map[string]string, len(users))
	clash := map[string]bool{}
	for name, k := range users {
		byKey[string(k.Bytes())] = name
		f := keys.FoldCase(name)
		if _, dup := byFolded[f]; dup {
			clash[f] = true // test mode's registrations may hold both
		}
		byFolded[f] = name
	}
	for f := range clash {
		delete(byFolded, f)
	}
	d.mu.Lock()
	d.byName, d.lines, d.byKey, d.byFolded = users, lines, byKey, byFolded
	d.mu.Unlock()
}

// LookupFolded finds the user whose name, its ASCII capitals in lower case
// (keys.FoldCase), is folded, and returns the name and key: a mail server
// that folds the case of addresses (Exim does by default) sends "carol@"
// for a user "Carol". A name two users fold to finds neither.
func (d *DB) LookupFolded(ctx context.Context, folded string) (string, keys.PublicKey, error) {
	d.mu.RLock()
	name, ok := d.byFolded[folded]
	var k keys.PublicKey
	if ok {
		k, ok = d.byName[name]
	}
	d.mu.RUnlock()
	if !ok {
		return "", keys.PublicKey{}, fmt.Errorf("looking up user %q: %w", folded, keys.ErrUnknownUser)
	}
	return name, k, nil
}

// Reload re-reads the users file (file mode) or the registrations file
// (test mode). On error the old table stays in force, the error is logged and
// returned.
func (d *DB) Reload() error {
	var (
		users keys.Users
		lines keys.Lines
		err   error
	)
	if d.testMode {
		d.regMu.Lock()
		defer d.regMu.Unlock()
		users, lines, err = d.loadRegistrations()
	} else {
		users, lines, err = keys.LoadUsersLines(d.path)
		if err != nil {
			err = fmt.Errorf("reloading users: %w", err)
		}
	}
	if err == nil {
		d.mu.RLock()
		err = d.checkRefused(users, lines)
		if err == nil && !d.testMode {
			err = d.checkMoved(users, lines)
		}
		if err == nil && !d.testMode {
			err = d.checkKept(users)
		}
		ledger := d.ledger
		d.mu.RUnlock()
		if err == nil && ledger != nil {
			ctx, cancel := context.WithTimeout(context.Background(), ledgerTimeout)
			err = CheckLedger(ctx, ledger, d.path, users, lines)
			if err == nil {
				err = ledger.RecordUsers(ctx, users)
			}
			cancel()
		}
	}
	if err != nil {
		d.log.Error("users reload failed; keeping the previous table", "file", d.path, "users", d.Len(), "err", err)
		return err
	}
	d.set(users, lines)
	d.log.Info("users reloaded", "file", d.path, "users", len(users))
	return nil
}

// Lookup returns user's public key, or an error wrapping keys.ErrUnknownUser.
// In test mode the error for a name nobody has registered also wraps
// ErrUnclaimed: its first key may still claim it.
func (d *DB) Lookup(ctx context.Context, user string) (keys.PublicKey, error) {
	d.mu.RLock()
	k, ok := d.byName[user]
	d.mu.RUnlock()
	if !ok && d.testMode {
		return keys.PublicKey{}, fmt.Errorf("looking up user %q: %w (%w in test mode)", user, keys.ErrUnknownUser, ErrUnclaimed)
	}
	if !ok {
		return keys.PublicKey{}, fmt.Errorf("looking up user %q: %w", user, keys.ErrUnknownUser)
	}
	return k, nil
}
