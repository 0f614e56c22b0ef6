package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
)

// keepSpoolKey holds the store to the spool key its deliveries have been
// signed with (spool.KeyKeeper): every device trusts that key only, so mail
// signed with another would be rejected on every device and passed by.
// Where the store can (spool.KeyHolder), the key is held until the store
// is closed, and refused while other running processes hold another: a
// second server given the wrong key file would otherwise record its key
// over a running one's, and that one would refuse every delivery. file is
// the --spool-key file, where names the store (its --spool-dir or "the
// PostgreSQL store"); hint, if not empty, replaces the one for a
// --spool-key flag (quickstart has none).
func keepSpoolKey(st spool.Store, pub keys.PublicKey, file, where, hint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if kh, ok := st.(spool.KeyHolder); ok {
		err = kh.HoldSpoolKey(ctx, pub.Bytes())
	} else if kk, ok := st.(spool.KeyKeeper); ok {
		err = kk.KeepSpoolKey(ctx, pub.Bytes())
	}
	var other *spool.OtherKeyError
	var live *spool.LiveKeyError
	switch {
	case errors.As(err, &live):
		return &exitError{liveKeyError(live, pub, file, where, hint), exConfig}
	case !errors.As(err, &other):
		return err
	}
	// The store refuses the key: a wrong --spool-key, the configuration
	// to fix (78, EX_CONFIG, as cspool deliver's).
	return &exitError{storeSpoolKeyError(ctx, st, other, pub, file, where, hint), exConfig}
}

// storeSpoolKeyError is keepSpoolKey's error for a store whose deliveries
// are signed by another key than pub.
func storeSpoolKeyError(ctx context.Context, st spool.Store, other *spool.OtherKeyError, pub keys.PublicKey, file, where, hint string) error {
	was := "another key"
	if k, kerr := keys.PublicKeyFromBytes(other.Recorded); kerr == nil {
		was = fmt.Sprintf("the key with id %x", k.KeyID())
	}
	err := fmt.Errorf("%s is the spool key with id %x, but the deliveries in %s are signed by %s", file, pub.KeyID(), where, was)
	if hint != "" {
		return withHint(err, hint)
	}
	id := spool.KeyID(other.Recorded)
	if replacedKey(ctx, st, other.Recorded, pub.Bytes()) {
		return withHint(fmt.Errorf("--spool-key: %w", err),
			fmt.Sprintf("If its key was replaced, this is the old one: the store records that it was replaced, and its deliveries are signed by the key with id %s from then on. "+
				"Pass the new spool.sec (the spool_key_id=%s of its servers' 'cspool server started' lines): its users' devices trust that key (docs/OPERATING.md, \"Replacing the spool key\")", id, id))
	}
	return withHint(fmt.Errorf("--spool-key: %w", err),
		fmt.Sprintf("pass the spool's secret key this spool runs with (the spool_key_id=%s of its servers' 'cspool server started' lines): its users' devices trust that key only. "+
			"If its key was replaced, this is the old one: pass the new spool.sec. "+
			"If this is the new one and the store was restored from a backup made before the replacement, the store records the old key again: do not go back to it, "+
			"replace it again by starting with this --spool-key and the key with id %s's public file as --previous-spool-key (docs/OPERATING.md, \"Restoring a backup\"). "+
			"To replace the store's key by this one, stop every server and cspool deliver running with the key with id %s, "+
			"then start them with this --spool-key and that key's public file as --previous-spool-key (docs/OPERATING.md, \"Replacing the spool key\")", id, id, id))
}

// replacedKey says whether the store records pub among the keys that
// recorded, or a key before it, replaced (spool.KeyHistory): pub is then
// an old key for certain, not a new one on a store restored from a backup
// made before its replacement. It follows at most 16 replacements, and
// says false when the store keeps no history or cannot be read.
func replacedKey(ctx context.Context, st spool.Store, recorded, pub []byte) bool {
	kh, ok := st.(spool.KeyHistory)
	if !ok {
		return false
	}
	for range 16 {
		prev, err := kh.PreviousSpoolKey(ctx, recorded)
		if err != nil || prev == nil {
			return false
		}
		if bytes.Equal(prev, pub) {
			return true
		}
		recorded = prev
	}
	return false
}

// liveKeyError is the refusal to start beside running processes that hold
// another spool key on the store: nothing was recorded, and they go on.
func liveKeyError(live *spool.LiveKeyError, pub keys.PublicKey, file, where, hint string) error {
	who, verb := "a running server (or cspool deliver)", "holds"
	if live.Holders > 1 {
		who, verb = fmt.Sprintf("%d running servers (or cspool deliver)", live.Holders), "hold"
	}
	err := fmt.Errorf("%s is the spool key with id %x, but %s on %s %s the spool key with id %s; nothing recorded, and the running ones go on",
		file, pub.KeyID(), who, where, verb, spool.KeyID(live.Live))
	if hint != "" {
		// quickstart: its hint is about keys made anew under a folder's mail.
		return withHint(err, "another process runs on this folder with its own spool key: stop it first")
	}
	return withHint(fmt.Errorf("--spool-key: %w", err),
		fmt.Sprintf("every server of one store runs with one spool key: check this one's --spool-key (a wrong path?) against the spool_key_id=%s of the running servers' 'cspool server started' lines. "+
			"To give a store that holds no mail yet another key on purpose, stop every server running with the key with id %s first", spool.KeyID(live.Live), spool.KeyID(live.Live)))
}

// loadPreviousSpoolKey loads --previous-spool-key's file for f, a public
// key, and refuses one that is the new key (--spool-key file, whose
// public half is pub): the replacement would change nothing.
func loadPreviousSpoolKey(f keyFlag, path, file string, pub keys.PublicKey) (keys.PublicKey, error) {
	previous, err := f.loadPublic(path, file)
	if err != nil {
		return keys.PublicKey{}, err
	}
	if previous.Equal(pub) {
		return keys.PublicKey{}, &exitError{withHint(fmt.Errorf("--previous-spool-key: %s is the public half of --spool-key %s (the key with id %x): nothing to replace", path, file, pub.KeyID()),
			"--previous-spool-key takes the public file of the spool key the store runs with now, and --spool-key the secret file of the new one (cspool gen-keys makes a new pair); to run on with this key, leave --previous-spool-key out"), exNoPerm}
	}
	return previous, nil
}

// replaceSpoolKey is keepSpoolKey with --previous-spool-key
// (spool.KeyReplacer): the store's spool key previous is replaced by pub,
// its logs kept, and pub is held; if the store records pub already (a
// second server started with the same flags, or one restarted with them)
// pub is held and nothing changes. replaced: the store recorded previous
// until now. prevFile and file are the flags' files, where names the
// store as for keepSpoolKey.
func replaceSpoolKey(st spool.Store, previous, pub keys.PublicKey, prevFile, file, where string) (replaced bool, err error) {
	kr, ok := st.(spool.KeyReplacer)
	if !ok {
		return false, fmt.Errorf("--previous-spool-key: %s cannot replace its spool key", where)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	replaced, err = kr.ReplaceSpoolKey(ctx, previous.Bytes(), pub.Bytes())
	var live *spool.LiveKeyError
	var np *spool.NotPreviousKeyError
	var rb *spool.ReplacedBeforeError
	switch {
	case errors.As(err, &rb):
		return false, &exitError{withHint(fmt.Errorf("--previous-spool-key: replacing the spool key with id %x (%s) by the key with id %x (--spool-key %s), but %s records that the key with id %x was replaced, by the key with id %s; nothing replaced",
			previous.KeyID(), prevFile, pub.KeyID(), file, where, pub.KeyID(), spool.KeyID(rb.ReplacedBy)),
			"a spool key replaced is not taken back: it may be the one that leaked, and the devices would move to it. If the two files are swapped, --spool-key takes the new secret file and --previous-spool-key the old public one; "+
				"to leave the key the store runs with now, make a new pair (cspool gen-keys) and replace the key by it (docs/OPERATING.md, \"Replacing the spool key\")"), exConfig}
	case errors.As(err, &live):
		who, verb := "a running server (or cspool deliver)", "holds"
		if live.Holders > 1 {
			who, verb = fmt.Sprintf("%d running servers (or cspool deliver)", live.Holders), "hold"
		}
		return false, &exitError{withHint(fmt.Errorf("--previous-spool-key: replacing the spool key with id %x (%s) by the key with id %x (--spool-key %s), but %s on %s %s the spool key with id %s; nothing replaced, and the running ones go on",
			previous.KeyID(), prevFile, pub.KeyID(), file, who, where, verb, spool.KeyID(live.Live)),
			fmt.Sprintf("a spool key is replaced only while nothing runs with it: stop every server (and cspool deliver) running with the key with id %s first, then start them with --spool-key %s --previous-spool-key %s (docs/OPERATING.md, \"Replacing the spool key\")",
				spool.KeyID(live.Live), file, prevFile)), exConfig}
	case errors.As(err, &np):
		recorded := "no spool key yet"
		if np.Recorded != nil {
			recorded = "the spool key with id " + spool.KeyID(np.Recorded)
		}
		return false, &exitError{withHint(fmt.Errorf("--previous-spool-key: replacing the spool key with id %x (%s) by the key with id %x (--spool-key %s), but %s records %s, neither of them; nothing replaced",
			previous.KeyID(), prevFile, pub.KeyID(), file, where, recorded),
			"--previous-spool-key takes the public file of the spool key the store runs with now (the spool_key_id of its servers' 'cspool server started' lines): check both files, and the store (--spool-dir, --dsn) (docs/OPERATING.md, \"Replacing the spool key\")"), exConfig}
	}
	return replaced, err
}

// spoolKeySuccession is the statement, signed by spoolKey, of the key the
// store's latest replacement recording it took out (spool.KeyHistory),
// which the server gives the devices (docs/API.md, "Spool keys"); nil when
// it replaced none, or the store keeps no history. With a store that keeps
// the statements (spool.KeyChain) it records this one, and returns as
// earlier the statements recorded before it, newest first, each signed by
// the key that replaced the one before: the chain back from spoolKey, up
// to the first replacement whose statement no server recorded (its new key
// ran with a release before this one) or that does not verify.
func spoolKeySuccession(st spool.Store, spoolKey *keys.SecretKey) (first *keys.Succession, earlier []keys.Succession, err error) {
	kh, ok := st.(spool.KeyHistory)
	if !ok {
		return nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prev, err := kh.PreviousSpoolKey(ctx, spoolKey.Public().Bytes())
	if err != nil || prev == nil {
		return nil, nil, err
	}
	pub, err := keys.PublicKeyFromBytes(prev)
	if err != nil {
		return nil, nil, fmt.Errorf("the spool key the store records as replaced: %w", err)
	}
	s, err := keys.SignSuccession(spoolKey, pub)
	if err != nil {
		return nil, nil, err
	}
	kc, ok := st.(spool.KeyChain)
	if !ok {
		return &s, nil, nil
	}
	if err := kc.RecordSpoolKeySuccession(ctx, s.Key.Bytes(), s.Previous.Bytes(), s.Signature); err != nil {
		return nil, nil, err
	}
	links, err := kc.SpoolKeyChain(ctx, s.Key.Bytes())
	if err != nil {
		return nil, nil, err
	}
	last := s
	for i := 1; i < len(links); i++ {
		l := links[i]
		var e keys.Succession
		if e.Key, err = keys.PublicKeyFromBytes(l.Key); err != nil || !e.Key.Equal(last.Previous) || l.Sig == nil {
			break
		}
		if e.Previous, err = keys.PublicKeyFromBytes(l.Previous); err != nil {
			break
		}
		e.Signature = l.Sig
		if e.Verify(e.Key) != nil {
			break
		}
		earlier = append(earlier, e)
		last = e
	}
	return &s, earlier, nil
}
