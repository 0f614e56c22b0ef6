package main

import (
	"crypto/rand"
	"errors"
	"fmt"

	"cspool/internal/keys"
)

func runGenKeys(e *env, args []string) error {
	fs := newFlagSet(e, "gen-keys", "SECRET_FILE PUBLIC_FILE", `
Create a new key pair: SECRET_FILE (mode 0600) and PUBLIC_FILE.

A key pair both receives encrypted entries (X25519) and signs (Ed25519). Make
one for each user (kept on the user's devices only) and one for the spool
(kept by the delivery side). The public file's key line can be pasted into the
server's users file as "NAME KEY". Existing files are never replaced unless
--force is given.`, `
cspool gen-keys user.sec user.pub
cspool gen-keys --comment "delivery key" spool.sec spool.pub`)
	force := fs.Bool("force", false, "replace existing key files")
	comment := fs.String("comment", "", "comment line written above each key")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("want 2 arguments, SECRET_FILE PUBLIC_FILE; got %d", fs.NArg())
	}
	sec, pub := fs.Arg(0), fs.Arg(1)
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		return err
	}
	if err := keys.WriteFiles(k, sec, pub, keys.WriteOptions{Force: *force, Comment: *comment}); err != nil {
		if errors.Is(err, keys.ErrExists) {
			return withHint(err, "pick other file names; --force replaces the existing key, and whatever was sealed to it can never be read again")
		}
		return withHint(err, "check that the folder exists and that you may write to it")
	}
	fmt.Fprintf(e.stdout, "wrote secret key %s (keep it private) and public key %s\n", sec, pub)
	fmt.Fprintf(e.stdout, "public key: %s\n", k.Public())
	return nil
}
