package main

import (
	"errors"
	"fmt"
	"os"

	"cspool/internal/command"
	"cspool/internal/entry"
)

// keptDir is where a device keeps the entries of its log that are sealed
// to another key (syncer.Config.KeepDir): next to the database.
func keptDir(dbPath string) string { return dbPath + ".misdelivered" }

func runOpenEntry(e *env, args []string) error {
	fs := newFlagSet(e, "open-entry", "ENTRY-FILE", `
Open an entry that a device kept because it was sealed to another key than
its user's (DB.misdelivered/POS.entry: mail delivered with a wrong or stale
key, see docs/OPERATING.md, "Mail sealed to the wrong key"), with the secret
key it was sealed to, and write the message it carries to standard output,
byte for byte, ready for cspool deliver to the right user. Only a delivery
signed by the spool key is opened. --user is the log the entry was found
in (the device's user), which the entry names.`, `
cspool open-entry --user-key bob.sec --spool-key spool.pub --user alice \
    ~/.cspool/alice.db.misdelivered/42.entry > message.eml
cspool deliver --users /etc/cspool/users --user alice --spool-key spool.sec \
    --spool-server https://spool.example.org < message.eml`)
	pass := addPassphraseFlag(fs, e)
	userKey := fs.String("user-key", "", "the secret key `file` the entry was sealed to (required)")
	spoolPub := fs.String("spool-key", "spool.pub", "the spool's public key `file`, which signed the delivery")
	user := fs.String("user", "", "the user whose log held the entry (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() != 1:
		return usagef("give the kept entry's file (DB.misdelivered/POS.entry)")
	case *userKey == "":
		return usagef("--user-key is required: the secret key the entry was sealed to")
	case *user == "":
		return usagef("--user is required: the user whose log held the entry")
	}
	path := fs.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		return withHint(fmt.Errorf("reading %s: %w", path, unwrapPath(err)), "give a file a device kept: DB.misdelivered/POS.entry")
	}
	k, err := openEntryKey.loadSecret(pass, *userKey, "")
	if err != nil {
		return err
	}
	spool, err := deviceSpoolPub.loadPublic(*spoolPub, "")
	if err != nil {
		return err
	}
	o, err := entry.Open(data, k, *user, spool)
	switch {
	case errors.Is(err, entry.ErrNotForUser):
		return withHint(fmt.Errorf("opening %s: %w", path, err),
			"this key is not the one the entry was sealed to (or --user is not the log's user): try the other keys in use, a stale key of this user's included")
	case err != nil:
		return withHint(fmt.Errorf("opening %s: %w", path, err), "check --spool-key: only a delivery signed by the spool key is opened")
	case o.Cmd.Kind != command.Deliver:
		return fmt.Errorf("opening %s: a %s entry, not a delivery: it carries no message", path, o.Cmd.Kind)
	}
	_, err = e.stdout.Write(o.Cmd.Body)
	return err
}

// openEntryKey is the key cspool open-entry opens a kept entry with.
var openEntryKey = keyFlag{flag: "--user-key", secret: true,
	obtain: "pass the secret key the entry was sealed to: its id is in the device's log line for the entry (\"sealed to key ...\")"}
