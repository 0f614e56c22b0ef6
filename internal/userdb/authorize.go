package userdb

import (
	"context"
	"fmt"
	"os"

	"cspool/internal/keys"
)

// Authorize reports whether key may act as user. The signature proving that
// the caller holds key has been checked already. It returns nil, or an error
// wrapping ErrUnknownKey or keys.ErrForbidden. In test mode a free name is
// registered to a key that owns no name yet.
func (d *DB) Authorize(ctx context.Context, user string, key keys.PublicKey) error {
	if err := keys.CheckUserName(user); err != nil {
		return fmt.Errorf("authorizing: %w", err)
	}
	d.mu.RLock()
	err, done := d.check(user, key)
	d.mu.RUnlock()
	if done || !d.testMode {
		return err
	}
	return d.register(ctx, user, key)
}

// Check is Authorize without its side effect: in test mode, a free name and
// a key that owns none give an error wrapping ErrUnclaimed instead of a
// registration. It never touches the disk.
func (d *DB) Check(_ context.Context, user string, key keys.PublicKey) error {
	if err := keys.CheckUserName(user); err != nil {
		return fmt.Errorf("authorizing: %w", err)
	}
	d.mu.RLock()
	err, done := d.check(user, key)
	d.mu.RUnlock()
	if !done && d.testMode {
		return fmt.Errorf("key %x for user %q: %w", key.KeyID(), user, ErrUnclaimed)
	}
	return err
}

// check decides from the table alone; done is false when the name is free
// and the key unknown (a registration, in test mode). d.mu is held.
func (d *DB) check(user string, key keys.PublicKey) (err error, done bool) {
	k, ok := d.byName[user]
	if ok && k.Equal(key) {
		return nil, true
	}
	if _, owner := d.byKey[string(key.Bytes())]; owner {
		return fmt.Errorf("key %x acting as user %q: %w", key.KeyID(), user, keys.ErrForbidden), true
	}
	if ok {
		return fmt.Errorf("key %x for user %q: %w", key.KeyID(), user, ErrUnknownKey), true
	}
	return fmt.Errorf("key %x for user %q: %w", key.KeyID(), user, ErrUnknownKey), false
}

// register records user -> key durably, then in the table.
func (d *DB) register(ctx context.Context, user string, key keys.PublicKey) error {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	d.mu.RLock()
	err, done := d.check(user, key) // another request may have won the name
	d.mu.RUnlock()
	if done {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := appendLine(d.path, user+" "+key.String()+"\n"); err != nil {
		return fmt.Errorf("registering user %q: %w", user, err)
	}
	d.mu.Lock()
	users := make(keys.Users, len(d.byName)+1)
	lines := make(keys.Lines, len(d.byName)+1)
	last := 0
	for n, k := range d.byName {
		users[n], lines[n] = k, d.lines[n]
		last = max(last, d.lines[n])
	}
	users[user], lines[user] = key, last+1 // the file holds registrations alone
	d.mu.Unlock()
	d.set(users, lines)
	d.log.Warn("TEST MODE: registered a new user on first use", "user", user, "key_id", fmt.Sprintf("%x", key.KeyID()), "file", d.path)
	return nil
}

// appendLine appends line to path (created 0600) and fsyncs it.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
