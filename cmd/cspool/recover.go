package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"cspool/internal/api"
	"cspool/internal/recovery"
	"cspool/internal/syncer"
)

func runRecover(e *env, args []string) error {
	fs := newFlagSet(e, "recover", "", `
After the spool server was restored from a backup: put back onto the spool
what this device holds beyond the restored head, and record it as a
restoration signed with the user's key, which the user's other devices take
without an alarm. Then sync this database, as cspool sync does.

Every device applied the log up to some position; a restore takes the
spool back to an earlier one, and every device past it raises an integrity
alarm ("rolled back"). This command finds the restored head (the last
position where the spool's log and this device's history agree), applies
the entries the spool received since then after this device's own history,
puts back the bytes of the messages only this device still has, and writes
the result. Nothing of this database changes until the restoration is on
the spool; the sync at the end adopts it.

Mailboxes that changed both before and after the restore get a new
UIDVALIDITY: mail clients download them again. A mailbox deleted after the
restore on a device that had not seen what the other history put in it is
kept.

Another device that holds more than this one (mail it received before the
restore that this one never synced) says so in its status: "run cspool
recover on this device". Run it there too; the second restoration holds
both. Devices that hold nothing more take the restoration by themselves.

Stop the daemon first (this command refuses to run beside it), and give it
the daemon's --user, --db, key files and --spool-server. Run it only after
the spool's operator confirmed the restore (docs/OPERATING.md, Backups):
after an attack it would just as well put this device's history back.
Exit status 0 (also when there is nothing to recover), 1 on failure.`, `
cspool recover --user alice --db ~/.local/state/cspool/mail.db --spool-server https://spool.example.org:3999 \
    --user-key ~/.config/cspool/user.sec --user-public-key ~/.config/cspool/user.pub --spool-key ~/.config/cspool/spool.pub`)
	devFlags := addDeviceFlags(fs, e, "the user `name` (the log's name on the spool)")
	ontoEmpty := fs.Bool("onto-empty", false, "put this device's whole history back onto a spool whose log of the user agrees with it on no entry (a backup made before the user's first mail); without it, recover refuses, as that is also what another server, or one on another --spool-dir, looks like")
	debug := fs.Bool("debug", false, "log debug detail")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	log := newLogger(e, *debug)
	dev, err := devFlags.open(e.stderr, log, "stop the daemon (cspool imap-server) for this database first, then run cspool recover again", false)
	if err != nil {
		return err
	}
	defer dev.close()
	if err := dev.dial(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := e.stdout

	rep, err := recovery.Recover(ctx, recovery.Config{User: dev.user, UserKey: dev.userKey, SpoolKey: dev.spoolPub, PreviousSpoolKey: dev.previousSpoolPub,
		Source: dev.client, Store: dev.store, Logger: log, TempDir: filepath.Dir(dev.dbPath), OntoEmpty: *ontoEmpty})
	switch {
	case errors.Is(err, recovery.ErrNothingToRecover):
		fmt.Fprintf(w, "nothing to recover: the spool's log (head %d) extends this device's history (position %d)\n", rep.SpoolHead, rep.Position)
	case errors.Is(err, recovery.ErrCovered):
		fmt.Fprintf(w, "nothing to recover: %v; syncing adopts it\n", err)
	case err != nil:
		return recoverFailed(dev.spoolURL, err)
	default:
		printRecovery(w, rep)
	}

	// The sync starts from what the recovery left in the store.
	if err := dev.startSync(syncOptions{}); err != nil {
		return err
	}
	sy := dev.sync
	if _, err := sy.SyncOnceWaiting(ctx, oneShotPatience); err != nil {
		hint := "check that the spool server is running and --spool-server is right, then run cspool recover again"
		if errors.Is(err, syncer.ErrIntegrity) {
			hint = "the spool's log still fails an integrity check after the recovery: report it to the spool's operator and keep this database"
		}
		return withHint(fmt.Errorf("syncing with %s after the recovery: %w", dev.spoolURL, err), hint)
	}
	st := sy.Status()
	fmt.Fprintf(w, "synced to position %d (head %d): %d entries applied\n", st.Position, max(st.Head, st.Position), st.Applied)
	return nil
}

// printRecovery says what a recovery found and wrote.
func printRecovery(w io.Writer, rep *recovery.Report) {
	fmt.Fprintf(w, "restored head: position %d (the spool's log and this device's agree up to there; the spool's head was %d)\n",
		rep.Base, rep.SpoolHead)
	fmt.Fprintf(w, "this device's history after it: %d entries (up to position %d), put back onto the spool's %d\n",
		rep.Superseded, rep.Position, rep.Replayed)
	fmt.Fprintf(w, "message bytes put back: %d messages (%s)\n", rep.Bodies, sizeText(rep.BodyBytes))
	if rep.Kept > 0 {
		fmt.Fprintf(w, "mailboxes kept though deleted after the restore: %d (they hold changes from before it)\n", rep.Kept)
	}
	renewed := "none"
	if len(rep.Renewed) > 0 {
		renewed = strings.Join(rep.Renewed, ", ") + " (mail clients download these mailboxes again)"
	}
	fmt.Fprintf(w, "new UIDVALIDITY: %s\n", renewed)
	fmt.Fprintf(w, "restoration written at position %d: %d messages, %s sealed\n", rep.Restoration, rep.Messages, sizeText(int64(rep.StateBytes)))
}

// recoverFailed turns a recovery error into one with a hint.
func recoverFailed(spoolURL string, err error) error {
	err = fmt.Errorf("recovering with %s: %w", spoolURL, err)
	switch {
	case errors.Is(err, recovery.ErrNothingInCommon):
		return withHint(err, "nothing was written. Check --spool-server: it may name another server than the one this device syncs with, or that server may run on another --spool-dir "+
			"(its log of this user is then empty or another's). If the spool was restored from a backup made before this user's first mail, run again with --onto-empty")
	case errors.Is(err, recovery.ErrNoCommonHistory):
		return withHint(err, "this device was rebuilt from a checkpoint written after the backup; run cspool recover on a device that has been running since before it")
	case errors.Is(err, recovery.ErrCompacted):
		return withHint(err, "a device wrote a checkpoint after the restore; copy this device's mail out with cspool export before clearing its alarm, and put what is missing back through a mail client")
	case errors.Is(err, recovery.ErrFork):
		return withHint(err, "the spool showed devices different logs: report it to the spool's operator and keep this database")
	case api.IsTemporary(err) || errors.Is(err, syscall.ECONNREFUSED):
		return withHint(err, "check that the spool server is running and --spool-server is right, then run cspool recover again (running it again is safe)")
	}
	return err
}
