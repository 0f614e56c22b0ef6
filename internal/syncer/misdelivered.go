package syncer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"cspool/internal/entry"
	"cspool/internal/mailstore"
)

// Mail sealed to the wrong key (docs/OPERATING.md, "Mail sealed to the
// wrong key"). The spool refuses such a delivery (docs/API.md §4), but one
// may still arrive: through a spool that did not check, or an operator's
// mistake in the store. No device of the user can open it, and only the
// holder of the key it was sealed to can read the message, so the device
// keeps the entry's bytes (Config.KeepDir) and raises an alarm that says
// what to do, instead of counting a rejection nobody reads while the
// spool compacts the only copy away.

// keep writes the entry at pos to KeepDir as POS.entry, synced, unless it
// is there already. why is the error Open gave, for the log.
func (s *Syncer) keep(pos uint64, data []byte, why error) error {
	if s.cfg.KeepDir == "" {
		s.log.Error("ALARM: an entry is sealed to another key than this user's; it is not kept (no folder for it)", "pos", pos, "reason", why)
		return nil
	}
	path := filepath.Join(s.cfg.KeepDir, strconv.FormatUint(pos, 10)+".entry")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.cfg.KeepDir, 0o700); err != nil {
		return fmt.Errorf("keeping the entry at position %d: %w", pos, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("keeping the entry at position %d: %w", pos, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keeping the entry at position %d: %w", pos, err)
	}
	s.log.Error("ALARM: an entry is sealed to another key than this user's: mail delivered with a wrong or stale key; kept for recovery",
		"pos", pos, "reason", why, "kept", path)
	return nil
}

// misdeliveredTally is what Status.Misdelivered says: how many entries
// the store recorded as sealed for another key or user (with their kept
// file in KeepDir), the newest of them, how many of them name another
// user, and the position of the newest record counted.
type misdeliveredTally struct {
	n, others       int
	newest, through uint64
}

// loadMisdelivered sets Status.Misdelivered, at the start, from the entries
// the store recorded as sealed for another key or user whose kept file is
// still in KeepDir: once the message is delivered again, removing the file
// ends the alarm (at the next start).
func (s *Syncer) loadMisdelivered(ctx context.Context) error {
	s.misdelivered = misdeliveredTally{}
	return s.countMisdelivered(ctx, s.status.Position)
}

// countMisdelivered adds to the tally the records after the newest it
// counted, once a batch up to position last is applied, and sets
// Status.Misdelivered from it. Only the records of that reason are read,
// one at a time, each once in a run: before, every batch holding a
// misdelivered entry listed every rejection the store held, of any
// reason, into memory and looked for a kept file for each, so a spool
// that served many entries the device rejects (a stranger's, say) and a
// misdelivered one now and then made each such batch cost memory and
// time in proportion to all of them. A record is made only at a position
// applied, so one counted after last means the log was taken back (a
// restoration): then every record is counted again.
func (s *Syncer) countMisdelivered(ctx context.Context, last uint64) error {
	t := s.misdelivered
	if last < t.through {
		t = misdeliveredTally{}
	}
	err := s.cfg.Store.RejectedAsAfter(ctx, mailstore.Reason(entry.ErrNotForUser.Error()), t.through, func(r mailstore.Rejection) error {
		t.through = max(t.through, r.Pos)
		if s.cfg.KeepDir != "" {
			if _, err := os.Stat(filepath.Join(s.cfg.KeepDir, strconv.FormatUint(r.Pos, 10)+".entry")); err != nil {
				return nil
			}
		}
		t.n++
		t.newest = max(t.newest, r.Pos)
		if strings.HasPrefix(r.Detail, entry.ErrOtherUserName.Error()) {
			t.others++
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.misdelivered = t
	n, newest, others := t.n, t.newest, t.others
	s.mu.Lock()
	s.status.Misdelivered = ""
	s.mu.Unlock()
	if n == 0 {
		return nil
	}
	entries := "entry of the log (at position %d) is"
	if n > 1 {
		entries = "entries of the log (the newest at position %d) are"
	}
	where := "they are not kept on this device"
	if s.cfg.KeepDir != "" {
		where = "kept in " + s.cfg.KeepDir
	}
	what := "sealed to another key than this user's: " +
		"mail delivered with a wrong or stale key, which no device of the user can open (%s). " +
		"Tell the spool's operator: the holder of that key can read the message with cspool open-entry and deliver it again, " +
		"then remove the kept file"
	if others == n {
		// Sealed to this user's key for another user name: no other
		// person's key is involved, and none of it was this user's mail.
		what = "sealed to this user's key but for another user of the spool, and not applied (%s): " +
			"the spool's users file gives that user this user's key, or the spool put another user's entries in this log. " +
			"Tell the spool's operator; this device's log names the user of each"
	}
	msg := fmt.Sprintf("%d "+fmt.Sprintf(entries, newest)+" "+what+" (docs/OPERATING.md, \"Mail sealed to the wrong key\")", n, where)
	s.mu.Lock()
	s.status.Misdelivered = msg
	s.mu.Unlock()
	return nil
}
