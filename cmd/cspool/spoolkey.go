package main

import (
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
		return liveKeyError(live, pub, file, where, hint)
	case !errors.As(err, &other):
		return err
	}
	was := "another key"
	if k, kerr := keys.PublicKeyFromBytes(other.Recorded); kerr == nil {
		was = fmt.Sprintf("the key with id %x", k.KeyID())
	}
	err = fmt.Errorf("%s is the spool key with id %x, but the deliveries in %s are signed by %s", file, pub.KeyID(), where, was)
	if hint != "" {
		return withHint(err, hint)
	}
	return withHint(fmt.Errorf("--spool-key: %w", err),
		"pass the spool's secret key this spool has always run with: its users' devices trust that key only, and would reject every delivery signed by another. A new spool key needs a new spool, and new device databases")
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
