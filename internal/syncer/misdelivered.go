package syncer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"cspool/internal/entry"
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

// loadMisdelivered sets Status.Misdelivered from the entries the store
// recorded as sealed for another key or user whose kept file is still in
// KeepDir: once the message is delivered again, removing the file ends the
// alarm (at the next start).
func (s *Syncer) loadMisdelivered(ctx context.Context) error {
	rej, err := s.cfg.Store.Rejected(ctx, 0)
	if err != nil {
		return err
	}
	n, newest, others := 0, uint64(0), 0
	for _, r := range rej {
		if string(r.Reason) != entry.ErrNotForUser.Error() {
			continue
		}
		if s.cfg.KeepDir != "" {
			if _, err := os.Stat(filepath.Join(s.cfg.KeepDir, strconv.FormatUint(r.Pos, 10)+".entry")); err != nil {
				continue
			}
		}
		n++
		newest = max(newest, r.Pos)
		if strings.HasPrefix(r.Detail, entry.ErrOtherUserName.Error()) {
			others++
		}
	}
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
