package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"cspool/internal/keys"
)

func runGenKeys(e *env, args []string) error {
	fs := newFlagSet(e, "gen-keys", "SECRET_FILE PUBLIC_FILE", `
Create a new key pair: SECRET_FILE (mode 0600) and PUBLIC_FILE.

A key pair both receives encrypted entries (X25519) and signs (Ed25519). Make
one for each user (kept on the user's devices only) and one for the spool
(kept by the delivery side). The public file's key line can be pasted into the
server's users file as "NAME KEY". Existing files are never replaced unless
--force is given.

With --passphrase the secret key is written encrypted with a passphrase
(age's scrypt recipient, docs/FORMAT.md §1), asked twice on the terminal or
read from --new-passphrase-file; every command that loads the key then asks
for it. 'cspool passphrase' adds, changes or removes one later.`, `
cspool gen-keys --passphrase user.sec user.pub
cspool gen-keys --comment "delivery key" spool.sec spool.pub`)
	force := fs.Bool("force", false, "replace existing key files")
	protect := fs.Bool("passphrase", false, "protect the secret key with a passphrase (asked twice on the terminal)")
	newFile := fs.String("new-passphrase-file", "", "with --passphrase: read the passphrase from this `file` instead of the terminal")
	workFactor := fs.Int("work-factor", keys.DefaultWorkFactor, "with --passphrase: scrypt work factor (log2 N); 18 takes about a second")
	comment := fs.String("comment", "", "comment line written above each key")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("want 2 arguments, SECRET_FILE PUBLIC_FILE; got %d", fs.NArg())
	}
	sec, pub := fs.Arg(0), fs.Arg(1)
	// The same name twice first: with a key's suffix it would otherwise
	// read as the two names swapped, and be told to swap them.
	if sec == pub {
		return usagef("SECRET_FILE and PUBLIC_FILE are both %q: give two file names", sec)
	}
	secAsPub, pubAsSec := strings.HasSuffix(sec, ".pub"), strings.HasSuffix(pub, ".sec")
	switch {
	case secAsPub && pubAsSec:
		// The secret key would be written under the public name, the
		// file a user sends to the operator.
		return usagef("the secret key goes first: %q looks like a public key's file name and %q like a secret key's; run 'cspool gen-keys %s %s'",
			sec, pub, shellQuote(pub), shellQuote(sec))
	case secAsPub:
		return usagef("SECRET_FILE %q looks like a public key's file name, the file that is sent around; run 'cspool gen-keys %s %s'",
			sec, shellQuote(strings.TrimSuffix(sec, ".pub")+".sec"), shellQuote(pub))
	case pubAsSec:
		return usagef("PUBLIC_FILE %q looks like a secret key's file name; run 'cspool gen-keys %s %s'",
			pub, shellQuote(sec), shellQuote(strings.TrimSuffix(pub, ".sec")+".pub"))
	}
	if *workFactor < 10 || *workFactor > 30 {
		return usagef("--work-factor %d: want 10 to 30 (log2 of scrypt's N; %d, the default, takes about a second)", *workFactor, keys.DefaultWorkFactor)
	}
	if *newFile != "" && !*protect {
		return usagef("--new-passphrase-file needs --passphrase")
	}
	opts := keys.WriteOptions{Force: *force, Comment: *comment, WorkFactor: *workFactor}
	if *protect {
		src := &passphraseSource{e: e, tty: openTTY}
		pp, err := src.newPassphrase(*newFile, sec)
		if err != nil {
			return err
		}
		opts.Passphrase = pp
	}
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		return err
	}
	if err := keys.WriteFiles(k, sec, pub, opts); err != nil {
		if errors.Is(err, keys.ErrExists) {
			return withHint(err, "pick other file names; --force replaces the existing key, and whatever was sealed to it can never be read again")
		}
		return withHint(err, "check that the folder exists and that you may write to it")
	}
	fmt.Fprintf(e.stdout, "wrote secret key %s (keep it private) and public key %s\n", sec, pub)
	if !*protect {
		fmt.Fprintf(e.stdout, "the secret key has no passphrase; to add one: cspool passphrase %s\n", shellQuote(sec))
	}
	fmt.Fprintf(e.stdout, "public key: %s\n", k.Public())
	return nil
}
