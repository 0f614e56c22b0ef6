package syncer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// ErrBadCheckpoint: the newest checkpoint failed validation (signature,
// format, or its content), so the device cannot rebuild from it.
var ErrBadCheckpoint = errors.New("invalid checkpoint")

// ErrBodiesGone reports that entries a checkpoint needs (the messages it
// keeps) are no longer on the spool. A correct spool only compacts what its
// newest checkpoint does not need, so this is either a race with a newer
// checkpoint (the next attempt finds it) or a spool serving an old
// checkpoint, or one that compacted past its own.
var ErrBodiesGone = errors.New("gone from the spool")

// WriteCheckpoint seals the store's current state as a checkpoint, signed
// by the user key, and hands it to the spool with the positions of the
// entries holding live message bodies; the spool then deletes the rest of
// the log up to the checkpoint. Another device's newer checkpoint makes
// this one stale: that is not an error (the stats are zero).
//
// Its memory does not grow with the mailbox, but for the kept positions:
// the store encodes its state from the rows into the Sealer
// (mailstore.WriteSnapshot), which seals it into a file in TempDir, and the
// upload reads that file. The file holds the sealed entry only, what the
// spool stores, and is removed as soon as it is made.
func (s *Syncer) WriteCheckpoint(ctx context.Context) (spool.CompactStats, uint64, error) {
	cpr, ok := s.cfg.Source.(Checkpointer)
	if !ok {
		return spool.CompactStats{}, 0, ErrNoCheckpoints
	}
	f, err := tempFile(s.cfg.TempDir)
	if err != nil {
		return spool.CompactStats{}, 0, fmt.Errorf("writing checkpoint: %w", err)
	}
	defer f.Close()
	var info mailstore.SnapshotInfo
	var size int64
	write := s.cfg.Store.WriteSnapshot
	if ls, ok := s.cfg.Store.(LogSnapshotter); ok && s.onlyHeld() {
		// What waits, the spool refuses for now: the log's state alone.
		write = ls.WriteLogSnapshot
	}
	err = write(ctx, func(i mailstore.SnapshotInfo, encode func(io.Writer) error) error {
		info = i
		if i.Position == 0 {
			return nil
		}
		c := &command.Command{Kind: command.Checkpoint, Position: i.Position, Digest: i.Digest[:]}
		sl, err := entry.NewSealer(f, c, i.Size, s.cfg.UserKey, s.cfg.UserKey.Public(), s.cfg.User, nil)
		if err != nil {
			return err
		}
		if err := encode(sl); err != nil {
			return err
		}
		size = sl.Size()
		return sl.Close()
	})
	if err != nil {
		return spool.CompactStats{}, 0, fmt.Errorf("writing checkpoint: %w", err)
	}
	if info.Position == 0 {
		return spool.CompactStats{}, 0, nil
	}
	keep := s.withTail(info.Keep, info.Position, size)
	stats, err := cpr.PutCheckpointFrom(ctx, info.Position, io.NewSectionReader(f, 0, size), keep)
	if errors.Is(err, spool.ErrStaleCheckpoint) {
		s.log.Info("checkpoint not needed: a newer one exists", "pos", info.Position)
		return spool.CompactStats{}, info.Position, nil
	}
	if err != nil {
		if temporary(err) {
			return spool.CompactStats{}, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if errors.Is(err, spool.ErrTooLarge) {
			return spool.CompactStats{}, 0, &CheckpointTooLargeError{Pos: info.Position, Size: size, Err: err}
		}
		return spool.CompactStats{}, 0, fmt.Errorf("storing checkpoint: %w", err)
	}
	s.mu.Lock()
	s.status.Checkpoint = max(s.status.Checkpoint, info.Position)
	s.status.CheckpointWritten = time.Now()
	s.cpWritten = info.Position
	s.mu.Unlock()
	s.log.Info("checkpoint stored", "pos", info.Position, "sealed_bytes", size, "kept", len(keep),
		"deleted", stats.Deleted, "reclaimed_bytes", stats.Bytes)
	return stats, info.Position, nil
}

// CheckpointTooLargeError: the spool refused a checkpoint as larger than it
// accepts (HTTP 413). It matches spool.ErrTooLarge.
type CheckpointTooLargeError struct {
	Pos  uint64
	Size int64 // the sealed checkpoint's bytes, without the kept positions
	Err  error // the spool's answer, which names its limit
}

func (e *CheckpointTooLargeError) Error() string {
	return fmt.Sprintf("storing checkpoint at %d (%d bytes): %v", e.Pos, e.Size, e.Err)
}

func (e *CheckpointTooLargeError) Unwrap() error { return e.Err }

// reclaimShare and reclaimFloor: a device writes a checkpoint once mail
// deleted since the last one freed a reclaimShare-th of the bodies held
// since (and at least reclaimFloor, or CheckpointMin if smaller).
const (
	reclaimShare = 10
	reclaimFloor = 100
)

// nearQuotaSpacing is the least time between two checkpoints a device
// writes because the spool says the user is near the quota.
const nearQuotaSpacing = time.Minute

// QuotaStated is the optional capability of a Source to say the user's
// usage of the spool against its quota, as the spool last stated it
// (api.Client.Quota). Near it (nearQuota), a device that deleted mail
// writes a checkpoint at once, whatever it freed.
type QuotaStated interface {
	Quota() (usage, limit int64, ok bool)
}

// nearQuota reports whether the spool last stated a usage of at least 90%
// of the user's quota, or Submit refused a message for the quota since the
// last checkpoint this device wrote (a message larger than the tenth left
// is refused further from it).
func (s *Syncer) nearQuota() bool {
	if s.quotaRefused.Load() {
		return true
	}
	u, l, ok := s.statedQuota()
	return ok && l > 0 && u >= l-l/10
}

// checkpointRefusedWait is how long maybeCheckpoint waits after the spool
// refused a checkpoint as too large before it tries again: until its
// operator raises the limit, every try would write and upload the whole
// checkpoint for nothing.
const checkpointRefusedWait = 6 * time.Hour

// tempFile makes a file in dir (os.TempDir() if empty), mode 0600, and
// removes its name at once: it is gone when closed, or when the process
// ends however it ends.
func tempFile(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, ".cspool-checkpoint-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// maybeCheckpoint writes a checkpoint when the log since the last one has
// grown to more entries than the live bodies it must keep (about half of
// what the spool stores is then reclaimable), and at least CheckpointMin
// entries. A log of deliveries alone, every entry of which holds a live
// message, as a new device's first sync reads, is no reason: the spool
// could compact none of it, and the checkpoint would stop the sync for a
// snapshot and a round trip. Mail deleted is (reclaimable): once a tenth
// of the bodies held since the last checkpoint, and at least
// min(reclaimFloor, CheckpointMin), are gone, or any when the spool says
// the user is near the quota (nearQuota), the device that appended some of
// the entries since writes one whatever their count, so that the spool
// frees their room (a user at the quota who deleted mail waited for as
// many new entries as messages left) and a new device does not fetch them.
// Failures are logged; the sync goes on.
func (s *Syncer) maybeCheckpoint(ctx context.Context) {
	if s.cfg.CheckpointMin < 0 {
		return
	}
	if _, ok := s.cfg.Source.(Checkpointer); !ok {
		return
	}
	st := s.Status()
	if _, ok := s.cfg.Store.(LogSnapshotter); st.Queued > 0 && !(ok && s.onlyHeld()) {
		// The state is not the log's alone (mailstore.ErrQueued). Only
		// changes held for the quota waiting, it is written of the log's
		// state (LogSnapshotter): its room is what they wait for.
		return
	}
	since := st.Position - min(st.Checkpoint, st.Position)
	if since == 0 {
		return
	}
	least := uint64(s.cfg.CheckpointMin)
	live, err := s.cfg.Store.LiveBodies(ctx)
	if err != nil {
		return
	}
	// Near the quota, at most one a nearQuotaSpacing for it: each is
	// the whole state, sealed and uploaded, and a user deleting one
	// message after another in a large mailbox would write one each.
	near := s.nearQuota() && time.Since(st.CheckpointWritten) >= nearQuotaSpacing
	s.mu.Lock()
	appended, refused := s.sentThrough > st.Checkpoint, s.cpRefused
	other := st.Checkpoint != 0 && st.Checkpoint != s.cpWritten
	if st.Checkpoint != s.liveSince {
		// Another checkpoint: count what is deleted from here.
		s.liveSince, s.liveMark = st.Checkpoint, live
	}
	s.liveMark = max(s.liveMark, live)
	freed := s.liveMark - live
	reclaim := appended && freed > 0 && (near || freed >= max(s.liveMark/reclaimShare, min(reclaimFloor, s.cfg.CheckpointMin)))
	if reclaim {
		s.liveMark = live // one try for these: the next needs as many more
	}
	s.mu.Unlock()
	if !reclaim {
		if since < least {
			return
		}
		if !appended && since < 2*least {
			// Another device's changes: it writes the checkpoint.
			// Every device crossed the line at the same entry, and
			// wrote one: beside a device under the stress mix, an
			// idle one sealed 32 checkpoints in 60 s, and the spool
			// refused 19 as stale.
			return
		}
		if other && since < least+least/4 {
			// Several devices making changes: the one that wrote the
			// newest checkpoint writes the next, and the others a
			// quarter later, once they have read it. Both wrote at
			// the same entry before, and the spool refused one of the
			// two as stale, after it was sealed and uploaded whole.
			return
		}
		if since <= uint64(live) {
			return
		}
	}
	if !refused.IsZero() && time.Since(refused) < checkpointRefusedWait {
		return
	}
	_, _, err = s.WriteCheckpoint(ctx)
	var tooLarge *CheckpointTooLargeError
	switch {
	case errors.As(err, &tooLarge):
		s.mu.Lock()
		s.cpRefused = time.Now()
		s.mu.Unlock()
		s.log.Error("the spool refused this mailbox's checkpoint as too large: the spool no longer compacts its log, "+
			"which grows with every change; raise the spool server's --max-checkpoint-size above the checkpoint's size "+
			"(docs/CONFIG.md). Next try in "+checkpointRefusedWait.String()+" or when the daemon restarts",
			"pos", tooLarge.Pos, "checkpoint_bytes", tooLarge.Size, "spool_answer", tooLarge.Err.Error())
	case err != nil && ctx.Err() == nil:
		s.log.Warn("writing checkpoint failed", "err", err)
	case err == nil:
		s.mu.Lock()
		s.cpRefused = time.Time{}
		s.mu.Unlock()
		s.quotaRefused.Store(false)
	}
}

func (s *Syncer) badCheckpoint() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.BadCheckpoint
}

// errCheckpointPaused: a checkpoint was rejected less than
// Config.RecheckPermanent ago, and the spool gives another.
var errCheckpointPaused = errors.New("checkpoint downloads paused")

// checkpointPause returns an error while a checkpoint other than the one
// rejected is not downloaded yet: each rejected checkpoint is a whole
// download (up to 1 GiB) of bytes the device could not use, and a spool
// that gave a new position each time had a device that was up to date
// download one after every read, 146 of 8 MiB in 20 s with the tests'
// backoff, one every 30 s with the daemon's. The read that gives the
// position is retried with the loop's backoff meanwhile; a read that
// needs no checkpoint (the log after the position is whole) goes on.
func (s *Syncer) checkpointPause(next uint64) error {
	s.mu.Lock()
	bad, at := s.status.BadCheckpoint, s.badCheckpointAt
	s.mu.Unlock()
	if at.IsZero() {
		return nil
	}
	left := s.cfg.RecheckPermanent - time.Since(at)
	if left <= 0 {
		return nil
	}
	return fmt.Errorf("%w: the spool gives a checkpoint at position %d, %s after this device rejected the one at %d; it tries another in %s",
		errCheckpointPaused, next, time.Since(at).Round(time.Second), bad, left.Round(time.Second))
}

// bootstrap rebuilds the store from the newest checkpoint: the spool has
// compacted past the store's position (or the store is new). read holds
// the entries the read that noticed it returned, used before asking again.
func (s *Syncer) bootstrap(ctx context.Context, head uint64, read []spool.Entry) (int, uint64, error) {
	cpr, ok := s.cfg.Source.(Checkpointer)
	if !ok {
		return 0, head, fmt.Errorf("%w: the log was compacted but the source cannot read checkpoints", ErrGap)
	}
	cp, err := s.readCheckpoint(ctx, cpr)
	if err != nil {
		return 0, head, fmt.Errorf("reading checkpoint: %w", err)
	}
	defer cp.Close()
	start := time.Now()
	rejected := func(err error) (int, uint64, error) {
		s.log.Error("rejected checkpoint; falling back to the log", "pos", cp.Pos, "err", err)
		s.mu.Lock()
		s.status.BadCheckpoint = cp.Pos
		s.badCheckpointAt = time.Now()
		s.status.Rejected++
		s.mu.Unlock()
		if rerr := s.cfg.Store.RecordRejected(ctx, cp.Pos, "checkpoint: "+err.Error()); rerr != nil {
			return 0, head, &storeError{rerr}
		}
		return 0, head, nil
	}
	if pos := s.Status().Position; cp.Pos <= pos {
		// The read gave a checkpoint after pos as the newest, and a
		// newest checkpoint never moves back: the spool serves an old
		// one, which cannot restore anything here.
		return rejected(fmt.Errorf("%w: the spool gives a checkpoint after position %d, which this device applied, as its newest, and serves one at %d",
			ErrBadCheckpoint, pos, cp.Pos))
	}
	// The signature and the state's digest are checked over the whole
	// checkpoint first; the state is then decoded as it is decrypted,
	// straight into the restore's transaction (mailstore.RestoreFrom),
	// and checked against the command before anything is compared.
	o, err := entry.OpenFrom(cp.Data, cp.Data.Size(), s.cfg.UserKey, s.cfg.User, s.cfg.UserKey.Public())
	if err != nil {
		return rejected(fmt.Errorf("%w: %w", ErrBadCheckpoint, err))
	}
	if err := checkStateCommand(o.Cmd, o.BodySHA256, cp.Pos); err != nil {
		return rejected(err)
	}
	cpCmd := o.Cmd
	var kept keptAuthors
	fetch := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		return s.fetchBodies(ctx, need, read, put, &kept)
	}
	check := func(got *mailstore.Restored) error { return checkState(cpCmd, got.Head, cp.Pos) }
	// Until the restore's last step, a change made on the device is
	// queued (queueing) and applied provisionally on the old state: the
	// store takes it between the restore's runs, and the last step
	// applies it again on top of the restored state. Only that step runs
	// under applyMu, so that sessions hear the restore's changes in the
	// order the store made them.
	s.setRestoring(true)
	defer s.setRestoring(false)
	var info *mailstore.Restored
	staged, err := s.cfg.Store.StageRestoreFrom(ctx, o.Body(), check, fetch)
	var res *mailstore.Result
	if err == nil {
		// A new device given the wrong spool key restores nothing: the
		// entries the checkpoint keeps say so.
		if err := s.checkKeptAuthors(ctx, &kept, cp.Pos, head); err != nil {
			staged.Close()
			return 0, head, err
		}
		info = staged.Restored()
		res, err = s.applyLocked(func() (*mailstore.Result, error) { return staged.Commit(ctx) })
		staged.Close()
	}
	var bad *mailstore.StateError
	if errors.As(err, &bad) {
		if !errors.Is(err, ErrBadCheckpoint) {
			err = fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
		}
		return rejected(err)
	}
	var c *mailstore.Contradiction
	if errors.As(err, &c) {
		// The checkpoint does not extend what this device applied or
		// appended: nothing restored.
		return 0, head, s.raise(ctx, s.Status().Position, c.Detail)
	}
	if err != nil {
		var se *storeError
		if errors.As(err, &se) || errors.Is(err, mailstore.ErrSnapshot) {
			return 0, head, err
		}
		if errors.Is(err, ErrBodiesGone) {
			// Once may be a race with a newer checkpoint and its
			// compaction; the same checkpoint twice is not.
			s.mu.Lock()
			again := s.goneAt == cp.Pos
			s.goneAt = cp.Pos
			s.mu.Unlock()
			if again {
				return 0, head, s.raise(ctx, s.Status().Position, fmt.Sprintf(
					"the spool serves the checkpoint at position %d as its newest, but %v: it serves an old checkpoint, or compacted entries its newest checkpoint needs",
					cp.Pos, err))
			}
		}
		return 0, head, fmt.Errorf("restoring from checkpoint %d: %w", cp.Pos, err)
	}
	sn := info.Head
	if kept.spool > 0 {
		s.keepCutover(ctx, kept.spoolFirst)
	}
	s.keepEarlierCutovers(ctx, &kept)
	s.mu.Lock()
	s.goneAt = 0
	s.mu.Unlock()
	s.refreshQueued(ctx)
	s.mu.Lock()
	s.status.Restores++
	s.forgetLight()
	s.mu.Unlock()
	s.setChain(spool.Hash{}, false)
	var chain *spool.Hash
	if len(sn.Chain) == len(spool.Hash{}) {
		chain = new(spool.Hash)
		copy(chain[:], sn.Chain)
	}
	s.advance(sn.Position, chain, 0, 0, res)
	s.forgetUnread(ctx, sn.Position)
	if chain != nil {
		s.setChain(*chain, true)
	}
	if cpCmd.Kind == command.Restoration {
		// Its entry, next in the log, applies without adopting again.
		s.mu.Lock()
		s.adopted = adoptedKey{pos: sn.Position + 1, digest: [sha256.Size]byte(cpCmd.Digest)}
		s.mu.Unlock()
	}
	s.resolveRestored(ctx)
	s.log.Info("rebuilt from checkpoint", "pos", sn.Position, "messages", info.Messages,
		"bodies", info.Bodies, "took", time.Since(start).Round(time.Millisecond))
	return info.Messages, head, nil
}

// FetchedCheckpoint is the spool's newest checkpoint as a device read it:
// in a file when the source writes it out (CheckpointWriterTo), else in
// memory.
type FetchedCheckpoint struct {
	Pos  uint64
	Data *io.SectionReader
	file *os.File
}

// Close removes the file, if there is one.
func (c *FetchedCheckpoint) Close() {
	if c.file != nil {
		c.file.Close()
	}
}

// FetchCheckpoint reads the newest checkpoint of cpr: into a file without
// a name in dir (tempFile; os.TempDir() if empty) when cpr can write it
// out, so that none of it is held in memory; the file holds the sealed
// checkpoint only, what the spool stores. Open it with entry.OpenFrom.
//
// A checkpoint shorter than its sealed header says (entry.CutShort) is a
// transfer cut short, not a checkpoint to refuse: a path that drops an
// answer's length and then its connection ends the body early without a
// sign the client can see. The error matches spool.ErrUnavailable, so
// that the device tries again.
func FetchCheckpoint(ctx context.Context, cpr Checkpointer, dir string) (*FetchedCheckpoint, error) {
	cw, ok := cpr.(CheckpointWriterTo)
	var cp *FetchedCheckpoint
	if !ok {
		c, err := cpr.Checkpoint(ctx)
		if err != nil {
			return nil, err
		}
		cp = &FetchedCheckpoint{Pos: c.Pos, Data: io.NewSectionReader(bytes.NewReader(c.Data), 0, int64(len(c.Data)))}
	} else {
		f, err := tempFile(dir)
		if err != nil {
			return nil, err
		}
		pos, n, err := cw.CheckpointTo(ctx, f)
		if err != nil {
			f.Close()
			return nil, err
		}
		cp = &FetchedCheckpoint{Pos: pos, Data: io.NewSectionReader(f, 0, n), file: f}
	}
	var first [entry.MaxHeaderLen]byte
	k, err := cp.Data.ReadAt(first[:], 0)
	if err != nil && err != io.EOF {
		cp.Close()
		return nil, fmt.Errorf("reading the checkpoint downloaded: %w", err)
	}
	if want, short := entry.CutShort(first[:k], cp.Data.Size()); short {
		cp.Close()
		return nil, &CutCheckpointError{Pos: cp.Pos, Got: cp.Data.Size(), Want: want}
	}
	return cp, nil
}

// CutCheckpointError: the checkpoint downloaded is shorter than its sealed
// header says (Want; 0 when the header itself was cut). It matches
// spool.ErrUnavailable: the transfer failed, not the checkpoint.
type CutCheckpointError struct {
	Pos       uint64
	Got, Want int64
}

func (e *CutCheckpointError) Error() string {
	if e.Want == 0 {
		return fmt.Sprintf("the checkpoint at position %d arrived cut short: %d bytes, not even its header", e.Pos, e.Got)
	}
	return fmt.Sprintf("the checkpoint at position %d arrived cut short: %d of the %d bytes its header gives", e.Pos, e.Got, e.Want)
}

func (e *CutCheckpointError) Is(target error) bool { return target == spool.ErrUnavailable }

// readCheckpoint is FetchCheckpoint into Config.TempDir.
func (s *Syncer) readCheckpoint(ctx context.Context, cpr Checkpointer) (*FetchedCheckpoint, error) {
	return FetchCheckpoint(ctx, cpr, s.cfg.TempDir)
}

// openCheckpoint verifies a checkpoint like any entry (sealed to the user,
// signed by the user key, a Checkpoint or Restoration command whose digest
// matches), without holding it (entry.OpenFrom), and decodes its state.
func (s *Syncer) openCheckpoint(cp *FetchedCheckpoint) (*mailstore.Snapshot, *command.Command, error) {
	o, err := entry.OpenFrom(cp.Data, cp.Data.Size(), s.cfg.UserKey, s.cfg.User, s.cfg.UserKey.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	return OpenStateFrom(o, cp.Pos)
}

// resolveRestored answers the Submit calls whose entries the restored
// checkpoint already covers: another device applied them and wrote the
// checkpoint before this device read them, so no Apply will report them.
// Their outcome is rebuilt from the restored state (seenOutcome): the
// rejection recorded, or where the messages they created or moved are now.
func (s *Syncer) resolveRestored(ctx context.Context) {
	s.mu.Lock()
	waiting := make(map[command.ID]pendingEntry, len(s.pending))
	for id, p := range s.pending {
		waiting[id] = p
	}
	s.mu.Unlock()
	if len(waiting) == 0 {
		return
	}
	ids := make([][16]byte, 0, len(waiting))
	for id := range waiting {
		ids = append(ids, id)
	}
	seen, err := s.cfg.Store.EntriesSeen(ctx, ids)
	if err != nil {
		s.log.Warn("resolving submitted changes after a restore", "err", err)
		return
	}
	for id, pos := range seen {
		o := s.seenOutcome(ctx, id, pos, waiting[id].cmd)
		s.mu.Lock()
		if q, ok := s.pending[id]; ok {
			q.ch <- o
			delete(s.pending, id)
		}
		s.mu.Unlock()
	}
}

// seenOutcome rebuilds the outcome of this device's entry id, seen first at
// pos without its Submit hearing it (a restored checkpoint covers it, or the
// loop applied it while the append's answer was lost: queue.go), from the
// store as it is now. An entry the log rejected (its mailbox deleted by
// another device first, ...) gets that rejection's reason and detail, as
// its Submit would have heard them: the store's seen ids count rejected
// entries too. Otherwise it was applied: where the messages cmd created or
// moved are, each read with its mailbox's UIDVALIDITY in one query
// (Locate), so that the client's APPEND, COPY or MOVE is answered OK with
// APPENDUID or COPYUID and not sent again. A message no longer there
// (expunged or moved since) is skipped: no placement (an APPEND answers OK
// without APPENDUID), and for COPY and MOVE a Partial outcome.
func (s *Syncer) seenOutcome(ctx context.Context, id command.ID, pos uint64, cmd *command.Command) mailstore.Outcome {
	rej, err := s.cfg.Store.RejectionOf(ctx, id, pos)
	if err != nil {
		// Read as applied: Locate, failing as well, places nothing.
		s.log.Warn("looking up whether a change sent was rejected", "pos", pos, "err", err)
	}
	if rej != nil {
		return mailstore.Outcome{Pos: pos, Entry: id, Kind: cmd.Kind, Status: mailstore.Rejected, Reason: rej.Reason, Detail: rej.Detail}
	}
	o := mailstore.Outcome{Pos: pos, Entry: id, Kind: cmd.Kind, Status: mailstore.Applied}
	place := func(src, msg command.ID) {
		if p, err := s.cfg.Store.Locate(ctx, msg); err == nil {
			p.Source = src
			o.Placed = append(o.Placed, p)
		} else if !src.IsZero() {
			o.Skipped = append(o.Skipped, src)
		}
	}
	switch cmd.Kind {
	case command.Append, command.Deliver:
		place(command.ID{}, id)
	case command.Copy:
		for i, src := range cmd.IDs {
			place(src, command.DeriveID(id, uint32(i)))
		}
	case command.Move:
		for _, src := range cmd.IDs {
			place(src, src)
		}
	}
	if len(o.Skipped) > 0 {
		o.Status = mailstore.Partial
	}
	return o
}

// forgetUnread forgets the entries rejected in a format this device did not
// read at positions up to pos, once the store was rebuilt from a state at
// pos: that state holds what its writer, which read them, applied, and the
// status report no longer tells the user that mail is missing (docs/STATUS.md).
// A failure leaves that advice standing, and is logged.
func (s *Syncer) forgetUnread(ctx context.Context, pos uint64) {
	if err := s.cfg.Store.ForgetRejectedAs(ctx, mailstore.ReasonUnknownVersion, pos); err != nil && ctx.Err() == nil {
		s.log.Warn("forgetting entries passed by in an unread format after a rebuild", "pos", pos, "err", err)
	}
}
