package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"os"
	"strings"
)

// home is where an outbox lives: the machine (its machine-id) and the file
// (its inode, and its birth time where the file system keeps one). A copy
// of the outbox, or a restore of it, on another machine or into another
// file has another home. The queue it carries is the original's, which may
// have relayed it since, or may relay it still: a copy relaying it too
// sends every message twice. The messages an outbox holds when it finds
// itself in a new home are held (not relayed) until the user releases them
// (Config.ReleaseHeld).
type home struct{ machine, file string }

// currentHome returns the home of the outbox file at path. Either part is
// "" where it cannot be told (no machine-id; a system without inodes).
func currentHome(path string) home {
	var h home
	for _, p := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(p); err == nil {
			if h.machine = strings.TrimSpace(string(b)); h.machine != "" {
				break
			}
		}
	}
	h.file = fileID(path)
	return h
}

// movedFrom reports whether an outbox recorded at was is now at h: a part
// known on both sides that differs. A file is its inode and, where known,
// its birth time (fileID); a home recorded with the inode alone (before
// the birth time was kept, or where it is not) is compared by the inode.
func (h home) movedFrom(was home) bool {
	differs := func(a, b string) bool { return a != "" && b != "" && a != b }
	ino, born, _ := strings.Cut(h.file, "/")
	wasIno, wasBorn, _ := strings.Cut(was.file, "/")
	return differs(h.machine, was.machine) || differs(ino, wasIno) || differs(born, wasBorn)
}

// checkHome records the outbox's home on its first open. When the outbox
// is found in another home, the messages it still has to relay are held,
// under a new random name (the hold), and the new home recorded. release
// releases the held messages (due at once) when it is the hold's name, as
// an earlier open made it and cspool status showed it; any other value
// releases nothing. So the open that holds them cannot release them (a
// person has not yet seen them held), and a --release-outbox left in a
// unit or a script cannot release a later hold: another copy's, or this
// outbox's once copied again, since every hold gets a new name. Before,
// the flag released what any earlier start held, and left in a unit it
// released a copy's whole queue at the copy's second start. With renamed
// (the file was just rewritten in place by this program), only the
// machine is compared.
func (o *Outbox) checkHome(ctx context.Context, renamed bool, release string) error {
	cur := currentHome(o.cfg.Path)
	return inTx(ctx, o.db, func(tx *sql.Tx) error {
		var was home
		var hold string
		err := tx.QueryRowContext(ctx, "SELECT machine, file, hold FROM home WHERE k = 1").Scan(&was.machine, &was.file, &hold)
		if errors.Is(err, sql.ErrNoRows) {
			_, err = tx.ExecContext(ctx, "INSERT INTO home (k, machine, file) VALUES (1, ?, ?)", cur.machine, cur.file)
			was = cur
		}
		if err != nil {
			return err
		}
		setHold := func(name string) error {
			hold = name
			_, err := tx.ExecContext(ctx, "UPDATE home SET hold = ? WHERE k = 1", name)
			return err
		}
		var held int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM messages WHERE done = 0 AND held = 1").Scan(&held); err != nil {
			return err
		}
		if held > 0 && hold == "" {
			// Held before holds were named.
			if err := setHold(newHoldName()); err != nil {
				return err
			}
		}
		if release != "" {
			switch {
			case held == 0:
				o.log.Warn("--release-outbox given, but no message is held: nothing released; give it only after cspool status said \"Outbox held\", with the name it gave",
					"outbox", o.cfg.Path, "given", release)
			case release != hold:
				o.log.Warn("--release-outbox does not name this outbox's held messages: nothing released; check the Sent folder (or the smarthost's log) for them, then restart once with --release-outbox="+hold+" (cspool status names it); docs/SENDING.md",
					"outbox", o.cfg.Path, "given", release, "hold", hold, "held", held)
			default:
				// A released message's time in the queue starts again:
				// held, it was not tried, and a copy held for longer than
				// MaxAge of running gave up on every message it released
				// at the first pass, bouncing what the user had just
				// asked to send.
				if _, err := tx.ExecContext(ctx, "UPDATE messages SET held = 0, next_try = ?, queued = ? WHERE held = 1",
					o.now().UnixMilli(), o.queueClock()); err != nil {
					return err
				}
				if err := setHold(""); err != nil {
					return err
				}
				o.log.Warn("held messages released: they are relayed now", "outbox", o.cfg.Path, "hold", release, "released", held)
				held = 0
			}
		}
		compared := was
		if renamed {
			compared.file = ""
		}
		if cur.movedFrom(compared) {
			res, err := tx.ExecContext(ctx, "UPDATE messages SET held = 1 WHERE done = 0 AND held = 0")
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			if held += n; held > 0 {
				// A new name, also for messages an earlier hold kept:
				// this is another copy, and the name given for the
				// earlier one must not release it.
				if err := setHold(newHoldName()); err != nil {
					return err
				}
				o.log.Error("this outbox was copied or restored from another machine or file: its queued messages are held, not relayed, since the outbox they came from may send them too",
					"outbox", o.cfg.Path, "held", held, "hold", hold, "other_machine", cur.machine != was.machine, "was_inode", was.file, "inode", cur.file,
					"hint", "check the Sent folder (or the smarthost's log) for them, then restart once with --release-outbox="+hold+" to send them; docs/SENDING.md")
			}
		}
		if cur != was {
			if _, err := tx.ExecContext(ctx, "UPDATE home SET machine = ?, file = ? WHERE k = 1", cur.machine, cur.file); err != nil {
				return err
			}
		}
		return nil
	})
}

// newHoldName names a hold: 48 random bits in hex, which no other hold,
// of this outbox or of a copy, shares.
func newHoldName() string {
	b := make([]byte, 6)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
