package outbox

import (
	"context"
	"database/sql"
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
// and the new home recorded. With release, the messages held at an earlier
// start are released (due at once); those held at this start are not: a
// person has not yet seen them held, and --release-outbox left in a unit
// or a script would otherwise relay a copy's whole queue at its first
// start, which is what the hold is for. With renamed (the file was just
// rewritten in place by this program), only the machine is compared.
func (o *Outbox) checkHome(ctx context.Context, renamed, release bool) error {
	cur := currentHome(o.cfg.Path)
	return inTx(ctx, o.db, func(tx *sql.Tx) error {
		var was home
		err := tx.QueryRowContext(ctx, "SELECT machine, file FROM home WHERE k = 1").Scan(&was.machine, &was.file)
		if errors.Is(err, sql.ErrNoRows) {
			_, err = tx.ExecContext(ctx, "INSERT INTO home (k, machine, file) VALUES (1, ?, ?)", cur.machine, cur.file)
			was = cur
		}
		if err != nil {
			return err
		}
		if release {
			// A released message's time in the queue starts again: held, it
			// was not tried, and a copy held for longer than MaxAge of
			// running gave up on every message it released at the first
			// pass, bouncing what the user had just asked to send.
			res, err := tx.ExecContext(ctx, "UPDATE messages SET held = 0, next_try = ?, queued = ? WHERE held = 1",
				o.now().UnixMilli(), o.queueClock())
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			if n > 0 {
				o.log.Warn("held messages released: they are relayed now", "outbox", o.cfg.Path, "released", n)
			} else {
				o.log.Warn("--release-outbox given, but no message was held at an earlier start: nothing released; give it only once, after cspool status said \"Outbox held\"",
					"outbox", o.cfg.Path)
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
			if n, _ := res.RowsAffected(); n > 0 {
				hint := "check the Sent folder (or the smarthost's log) for them, then restart with --release-outbox to send the rest; docs/SENDING.md"
				if release {
					hint = "--release-outbox releases only what an earlier start held: check the Sent folder (or the smarthost's log) for them, then restart with it; docs/SENDING.md"
				}
				o.log.Error("this outbox was copied or restored from another machine or file: its queued messages are held, not relayed, since the outbox they came from may send them too",
					"outbox", o.cfg.Path, "held", n, "other_machine", cur.machine != was.machine, "was_inode", was.file, "inode", cur.file,
					"hint", hint)
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
