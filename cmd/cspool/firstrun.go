package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"cspool/internal/command"
	"cspool/internal/imapd"
	"cspool/internal/mailstore"
	"cspool/internal/submit"
)

// A first run of cspool sync or imap-server (--db named no file) marks the
// database it makes as its own with a file beside it, DB.firstrun, written
// and synced before the database is created and removed once the database
// holds something: the spool answered a read of the log (the key is the
// user's), or, before it is made, a change from a mail client (which may be
// queued on the device) or a message taken for sending (DB.outbox). While
// the mark is there the database holds nothing that is not in the spool,
// nor does the outbox if the run made it; a run that ends without a read
// answered removes them (device.drop), and a start that finds the mark
// removes what a run killed before it left (clearFirstRun), so that the
// next start, with the right keys, is a first run again. The mark is
// needed because a run killed (SIGKILL, a power cut) never reaches its end:
// the database it left, encrypted with the key it was given, stopped the
// next run with another key ("encrypted with another key") until a person
// moved it away.
//
// The database is not made under another name and renamed into place: the
// daemon serves it (offline) from its start, and SQLite finds an open
// database's write-ahead log by the database's name, so a rename under a
// running daemon would part them.

// firstRunSuffix names the mark: DB.firstrun.
const firstRunSuffix = ".firstrun"

// firstRunOutboxLine, in the mark, says that the first run found no
// DB.outbox: one there now was made by it and goes with the database.
const firstRunOutboxLine = "outbox: made by this run"

// firstRunText is what the mark says to a person who finds it.
const firstRunText = "cspool: the database beside this file was made by a first run that the spool has not answered yet;\n" +
	"it holds nothing, and the next cspool sync or imap-server removes it and makes it again.\n"

// prepareFirstRun runs under the database's lock, before the store is
// opened, for the commands that remove a database they made and did not
// use (dropUnread). It sets d.created and d.firstRun: a database that is
// not there, or one a first run killed before its first answered read
// left (removed now, with its outbox if that run made it), is made by this
// run, marked until it holds something (keep).
func (d *device) prepareFirstRun(w io.Writer) error {
	mark := d.dbPath + firstRunSuffix
	text, err := os.ReadFile(mark)
	marked := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", mark, err)
	}
	_, err = os.Lstat(d.dbPath)
	missing := errors.Is(err, fs.ErrNotExist)
	if !marked && !missing {
		return nil
	}
	outboxToo := false
	if marked {
		outboxToo = strings.Contains(string(text), firstRunOutboxLine)
		if err := d.clearFirstRun(w, outboxToo, !missing); err != nil {
			return err
		}
	} else {
		_, err := os.Lstat(d.dbPath + ".outbox")
		outboxToo = errors.Is(err, fs.ErrNotExist)
		text := firstRunText
		if outboxToo {
			text += firstRunOutboxLine + "\n"
		}
		err = writeSynced(mark, []byte(text))
		if err == nil {
			err = syncDir(filepath.Dir(mark))
		}
		if err != nil {
			os.Remove(mark) // a part written
			hint := "check that the directory of --db exists and is writable"
			if errors.Is(err, syscall.ENOSPC) {
				hint = freeSpaceHint(filepath.Dir(d.dbPath), "nothing was lost, and the mail waits in the spool")
			}
			return withHint(fmt.Errorf("making %s: %w", mark, err), hint)
		}
	}
	d.created = true
	d.firstRun = new(firstRun)
	d.firstRun.marked.Store(true)
	d.firstRun.outbox = outboxToo
	return nil
}

// clearFirstRun removes what a first run that ended without an answered
// read left beside its mark: the database and its journals (said on w
// when the database itself was there), and the outbox if that run made
// it. The mark stays: this run is a first run too.
func (d *device) clearFirstRun(w io.Writer, outboxToo, said bool) error {
	dbs := []string{d.dbPath}
	if outboxToo {
		dbs = append(dbs, d.dbPath+".outbox")
	}
	for _, db := range dbs {
		for _, p := range []string{db, db + "-wal", db + "-shm"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return withHint(fmt.Errorf("removing %s, left by a first run the spool never answered: %w", p, err),
					fmt.Sprintf("remove %s and %s by hand, or give --db another file", p, d.dbPath+firstRunSuffix))
			}
		}
	}
	if said {
		fmt.Fprintf(w, "cspool: %s removed: a first run made it and ended (killed, or a power cut) before the spool answered a read of the log, so it held nothing; this run makes it again\n", d.dbPath)
	}
	return nil
}

// firstRun is the state of the mark DB.firstrun of a database this run
// made (prepareFirstRun).
type firstRun struct {
	marked atomic.Bool
	// outbox: DB.outbox was made by the first run too, so it goes with
	// the database.
	outbox bool
}

// holdsSomething reports whether the store holds what only the device has
// or what a read brought: an applied entry, a queued change, an alarm.
// An error counts as something.
func holdsSomething(ctx context.Context, store *mailstore.Store) bool {
	pos, err := store.Position(ctx)
	if err != nil || pos != 0 {
		return true
	}
	if n, err := store.QueueLen(ctx); err != nil || n != 0 {
		return true
	}
	alarms, err := store.Alarms(ctx)
	return err != nil || len(alarms) != 0
}

// keep makes the database this run made a lasting one, before it holds
// anything the spool does not have: the mark is removed, and the removal
// synced, once. The sync loop calls it at the first read the spool
// answered, the IMAP server before a change, the submission server before
// it takes a message, and close when the database stays.
func (d *device) keep() { d.removeMark() }

// removeMark removes the mark of the database this run made, once, and
// syncs the removal.
func (d *device) removeMark() {
	if d.firstRun == nil || !d.firstRun.marked.CompareAndSwap(true, false) {
		return
	}
	mark := d.dbPath + firstRunSuffix
	err := os.Remove(mark)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		err = syncDir(filepath.Dir(d.dbPath))
	}
	if err != nil {
		d.log.Error("removing the first run's mark failed: with it, a later start that finds no read answered may remove the database", "path", mark, "err", err)
	}
}

// firstRunOutbox reports whether DB.outbox, if there, is this first run's
// to remove with the database: it was not there before the first run.
func (d *device) firstRunOutbox() bool {
	if d.firstRun != nil {
		return d.firstRun.outbox
	}
	_, err := os.Lstat(d.dbPath + ".outbox")
	return errors.Is(err, fs.ErrNotExist)
}

// syncDir syncs the directory dir, so that a file made or removed in it
// stays so after a power cut.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// keepFirst is the IMAP server's Submitter with keep run before each
// change: a change queued on the device while the spool was never
// answered is the device's alone, so the database that holds it stays.
type keepFirst struct {
	next imapd.Submitter
	keep func()
}

func (k keepFirst) Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error) {
	k.keep()
	return k.next.Submit(ctx, cmds...)
}

// keepFirstQueue is the submission server's queue (the outbox) with keep
// run, if set, before each message it takes.
type keepFirstQueue struct {
	next submit.Queue
	keep func()
}

func (k keepFirstQueue) Enqueue(ctx context.Context, m *submit.Message) (string, error) {
	if k.keep != nil {
		k.keep()
	}
	return k.next.Enqueue(ctx, m)
}
