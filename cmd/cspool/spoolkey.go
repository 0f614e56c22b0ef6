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
// file is the --spool-key file, where names the store (its --spool-dir or
// "the PostgreSQL store"); hint, if not empty, replaces the one for a
// --spool-key flag (quickstart has none).
func keepSpoolKey(st spool.Store, pub keys.PublicKey, file, where, hint string) error {
	kk, ok := st.(spool.KeyKeeper)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := kk.KeepSpoolKey(ctx, pub.Bytes())
	var other *spool.OtherKeyError
	if !errors.As(err, &other) {
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
