package syncer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// Restorations, device side (docs/SECURITY.md §8). After the spool was
// restored from a backup, a device that held the history the restore
// removed writes a Restoration (package recovery): its state rebased onto
// the log as the spool has it, signed with the user's key, stored as the
// spool's newest checkpoint and appended to the log right after the
// position it is at. A device takes it:
//
//   - when it reads the entry where it belongs (it followed the spool's log
//     after the restore): it adopts the state, then applies the entry;
//   - when the spool's log no longer extends what it applied (a rollback:
//     check 2 or 3), or while an integrity alarm stands: it looks at the
//     spool's newest checkpoint, and adopts it if it supersedes what this
//     device applied and explains every alarm (mailstore.AdoptFrom); otherwise
//     the alarm stands, and one that supersedes some of this device's
//     history but does not hold the rest raises an alarm saying to recover
//     this device too. One that supersedes none of it (an older
//     restoration, as a backup taken after a recovery holds) explains
//     nothing and raises nothing: the rollback's alarm, at this device's
//     position, stands, and the restoration a recovery writes explains it.
//
// What makes it safe: only the user's key signs a restoration (the
// spool's may only deliver, and no checkpoint is trusted from it), and a
// device adopts one only if it holds every entry this device applied, at
// its position, as applied or superseded, and every message with the same
// bytes: adopting loses nothing this device had. An old restoration served
// again holds nothing this device applied after it, so it is refused (and
// supersedes none of it, so the alarm is the rollback's).

// errAdopted: a rollback was explained by a restoration, which the device
// adopted; the sync goes on from the restoration's position.
var errAdopted = errors.New("adopted a restoration")

// adoptedKey names the restoration a device adopted last: the position of
// its entry and the digest of its state, so that reading the entry after
// adopting its state applies it instead of adopting again.
type adoptedKey struct {
	pos    uint64
	digest [sha256.Size]byte
}

// OpenStateFrom checks the command of a checkpoint or a restoration
// opened by entry.OpenFrom and decodes its state, which must be at pos
// (the checkpoint's position, or the position before a restoration
// entry): the state is decoded as its body is decrypted (mailstore.ReadSnapshot),
// neither held in one buffer. It returns the command, without its Body.
func OpenStateFrom(o *entry.Streamed, pos uint64) (*mailstore.Snapshot, *command.Command, error) {
	if err := checkStateCommand(o.Cmd, o.BodySHA256, pos); err != nil {
		return nil, nil, err
	}
	sn, err := mailstore.ReadSnapshot(o.Body())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if err := checkState(o.Cmd, sn, pos); err != nil {
		return nil, nil, err
	}
	return sn, o.Cmd, nil
}

// checkStateCommand checks a checkpoint's or a restoration's command whose
// body has the SHA-256 digest.
func checkStateCommand(c *command.Command, digest [sha256.Size]byte, pos uint64) error {
	switch {
	case c.Kind != command.Checkpoint && c.Kind != command.Restoration:
		return fmt.Errorf("%w: holds a %s command", ErrBadCheckpoint, c.Kind)
	case c.Position != pos:
		return fmt.Errorf("%w: covers position %d, stored as %d", ErrBadCheckpoint, c.Position, pos)
	case !bytes.Equal(digest[:], c.Digest):
		return fmt.Errorf("%w: state digest mismatch", ErrBadCheckpoint)
	}
	return nil
}

// checkState checks a decoded state against its command and position.
func checkState(c *command.Command, sn *mailstore.Snapshot, pos uint64) error {
	if sn.Position != pos {
		return fmt.Errorf("%w: state at position %d, stored as %d", ErrBadCheckpoint, sn.Position, pos)
	}
	if c.Kind == command.Restoration && len(sn.Chain) != sha256.Size {
		return fmt.Errorf("%w: a restoration without the chain hash at its position", ErrBadCheckpoint)
	}
	return nil
}

// checkBase refuses a restoration whose restored head is not this
// device's history: its chain hash there differs from the one this device
// recorded (when it has one).
func (s *Syncer) checkBase(ctx context.Context, c *command.Command, at uint64) *chain.Failure {
	if c.Base == nil || s.cfg.DisableIntegrity {
		return nil
	}
	h, ok, err := s.cfg.Store.ChainAt(ctx, c.Base.Pos)
	if err != nil || !ok {
		return nil
	}
	return chain.CheckBase(at, c.Position, c.Base.Pos, c.Base.Hash, h)
}

// errNotSuperseding refuses, after a rollback or while an alarm stands, a
// newest checkpoint that supersedes no history: it explains nothing.
var errNotSuperseding = errors.New("the checkpoint supersedes no history")

// baseRefused refuses a restoration whose restored head is not this
// device's history (checkBase), once its state has been read and checked.
type baseRefused struct{ f *chain.Failure }

func (e *baseRefused) Error() string { return e.f.Detail }

// adoptEntry adopts the state of the restoration entry o at position at,
// which the device reached by following the log (its position is at-1).
func (s *Syncer) adoptEntry(ctx context.Context, o *entry.Opened, at uint64) error {
	if err := checkStateCommand(o.Cmd, sha256.Sum256(o.Cmd.Body), at-1); err != nil {
		return err
	}
	err := s.adopt(ctx, bytes.NewReader(o.Cmd.Body), o.Cmd, at, false)
	var b *baseRefused
	var bad *mailstore.StateError
	var c *mailstore.Contradiction
	switch {
	case errors.As(err, &b):
		return s.raise(ctx, b.f.Pos, b.f.Detail)
	case errors.As(err, &bad):
		if !errors.Is(err, ErrBadCheckpoint) {
			err = fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
		}
		return err
	case errors.As(err, &c):
		return s.raise(ctx, at-1, c.Detail)
	}
	return err
}

// adopt takes the state of c, a restoration (or a checkpoint after one)
// whose entry is at position at (its state at at-1), read from body: it
// is decoded as it is read, straight into the adoption's transaction
// (mailstore.AdoptFrom), and checked against the command, refused when
// superseding is set and it supersedes nothing (errNotSuperseding), and
// refused when its restored head is not this device's history
// (baseRefused), in that order, before anything is compared; a refusal
// is a *mailstore.StateError that changed nothing. On success the sync
// state moves to its position and chain.
func (s *Syncer) adopt(ctx context.Context, body io.Reader, c *command.Command, at uint64, superseding bool) error {
	start := time.Now()
	base := s.checkBase(ctx, c, at)
	check := func(got *mailstore.Restored) error {
		if err := checkState(c, got.Head, at-1); err != nil {
			return err
		}
		if superseding && got.Superseded == 0 {
			return errNotSuperseding
		}
		if base != nil {
			return &baseRefused{base}
		}
		return nil
	}
	fetch := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		return s.fetchBodies(ctx, need, nil, put, nil)
	}
	var ad *mailstore.Adoption
	var info *mailstore.Restored
	_, err := s.applyLocked(func() (res *mailstore.Result, err error) {
		res, ad, info, err = s.cfg.Store.AdoptFrom(ctx, body, check, fetch)
		return res, err
	})
	if err != nil {
		return err
	}
	sn := info.Head
	s.refreshQueued(ctx)
	var chain spool.Hash
	copy(chain[:], sn.Chain)
	s.mu.Lock()
	s.status.Position = sn.Position
	// The head seen before a restore is not the spool's any more.
	s.status.Head = max(sn.Position, s.spoolHead)
	s.chain, s.chainKnown = chain, len(sn.Chain) == len(chain)
	s.status.Restores++
	s.forgetLight()
	if s.status.Alarm != "" {
		s.status.Alarm = ""
		s.alarmed = make(chan struct{})
	}
	s.adopted = adoptedKey{pos: at, digest: [sha256.Size]byte(c.Digest)} // checked: the SHA-256 of its body
	close(s.applied)
	s.applied = make(chan struct{})
	s.mu.Unlock()
	s.forgetUnread(ctx, sn.Position)
	for _, a := range ad.Cleared {
		s.log.Warn("integrity alarm explained by a restoration; cleared", "pos", a.Pos, "detail", a.Detail)
	}
	for _, a := range ad.Lost {
		s.log.Warn("a change this device appended is not in the restoration: it is lost (its client was told it failed)",
			"entry", a.ID.String(), "pos", a.Pos)
	}
	restored := uint64(0)
	if c.Base != nil {
		restored = c.Base.Pos
	}
	s.log.Info("adopted a restoration", "pos", sn.Position, "restored_head", restored,
		"superseded", info.Superseded, "crossed", ad.Crossed, "messages", info.Messages,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// tryRestoration looks, after a rollback or while an alarm stands, for a
// restoration that explains it: the spool's newest checkpoint, when it
// supersedes history (one at a position already tried is not fetched
// again). It returns errAdopted when it took one, nil when there is none
// to take, and an error to retry later. The checkpoint's signature, its
// state's digest and its command are checked first (entry.OpenFrom's
// first pass); its state is then read from the file as it is decrypted
// (adopt), not held.
func (s *Syncer) tryRestoration(ctx context.Context, cpPos uint64) error {
	cpr, ok := s.cfg.Source.(Checkpointer)
	if !ok || cpPos == 0 {
		return nil
	}
	s.mu.Lock()
	tried := s.triedRestoration == cpPos
	s.mu.Unlock()
	if tried {
		return nil
	}
	cp, err := s.readCheckpoint(ctx, cpr)
	if errors.Is(err, spool.ErrNoCheckpoint) {
		return nil
	}
	if err != nil {
		return err
	}
	defer cp.Close()
	remember := func() {
		s.mu.Lock()
		s.triedRestoration = cp.Pos
		s.mu.Unlock()
	}
	o, err := entry.OpenFrom(cp.Data, cp.Data.Size(), s.cfg.UserKey, s.cfg.User, s.cfg.UserKey.Public())
	if err != nil {
		remember()
		return nil // not the user's: bootstrap reports a bad checkpoint
	}
	if err := checkStateCommand(o.Cmd, o.BodySHA256, cp.Pos); err != nil {
		remember()
		return nil
	}
	err = s.adopt(ctx, o.Body(), o.Cmd, cp.Pos+1, true)
	var b *baseRefused
	var bad *mailstore.StateError
	var c *mailstore.Contradiction
	var u *mailstore.Unexplained
	switch {
	case err == nil:
		return errAdopted
	case errors.As(err, &b):
		remember()
		return s.raise(ctx, b.f.Pos, b.f.Detail)
	case errors.As(err, &bad):
		remember() // malformed, or not a restoration: nothing to adopt
		return nil
	case errors.As(err, &c) && !c.Crossed:
		// It supersedes none of this device's history: it is not what
		// the rollback or the alarm is about (an older restoration, served
		// again by a restore of a backup taken after it), and explains
		// nothing, as a checkpoint superseding no history. The alarm
		// stands where it is, and a restoration written from there
		// explains it.
		remember()
		s.log.Warn("the spool's newest checkpoint is a restoration that supersedes none of this device's history: it explains nothing", "pos", cp.Pos, "detail", c.Detail)
		return nil
	case errors.As(err, &c):
		remember()
		s.log.Warn("the spool's newest checkpoint is a restoration that does not hold this device's history", "pos", cp.Pos, "detail", c.Detail)
		return s.raise(ctx, c.Pos, c.Detail)
	case errors.As(err, &u):
		remember()
		s.log.Warn("the spool's newest checkpoint is a restoration, but it does not explain this device's alarms", "pos", cp.Pos, "detail", u.Error())
		return nil
	}
	return err
}

// waitRestoration waits, while an integrity alarm stands, for the spool's
// log to change (a long poll after its head) or for the backoff, so that a
// restoration written meanwhile is found soon. It returns false when ctx
// is done.
func (s *Syncer) waitRestoration(ctx context.Context) bool {
	s.mu.Lock()
	head := s.spoolHead
	s.mu.Unlock()
	lr, err := s.cfg.Source.ReadLog(ctx, head, 1, 1, s.cfg.Wait)
	if err == nil {
		s.mu.Lock()
		s.spoolHead = lr.Head
		s.mu.Unlock()
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(s.cfg.MaxBackoff):
		return true
	}
}

// alarmedChan is the channel Alarmed returns, which adopting a restoration
// replaces.
func (s *Syncer) alarmedChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alarmed
}

// isRestoration reports whether an opened entry at pos is a restoration
// written by the user, where it belongs (right after its state's position).
func (s *Syncer) isRestoration(o *entry.Opened, openErr error, pos uint64) bool {
	return openErr == nil && o.Cmd.Kind == command.Restoration && o.Cmd.Position+1 == pos &&
		o.Author.Equal(s.cfg.UserKey.Public())
}

// adoptedAt reports whether the restoration o at pos is the one adopted
// last, so its entry now applies.
func (s *Syncer) adoptedAt(pos uint64, o *entry.Opened) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adopted == adoptedKey{pos: pos, digest: sha256.Sum256(o.Cmd.Body)}
}
