package syncer

import (
	"slices"

	"cspool/internal/mailstore"
)

// A checkpoint keeps, besides the entries that hold its live messages'
// bodies, the newest CheckpointTail entries before it that hold no message
// bytes (flag changes, moves, expunges, mailbox changes) which this device
// applied in this run (Config.CheckpointTail; docs/MAILSTORE.md,
// checkpoints). Another device a few
// entries behind at the moment of the compaction then finds no hole where
// those were, and reads on instead of rebuilding its whole state from the
// checkpoint; it still rebuilds when the entries it lacks held a body that
// compaction deleted (mail just expunged), or when it is further behind.
// Bodies of deleted mail are never kept, so deleting mail still frees the
// user's quota at the next checkpoint. The kept entries are small (a
// command without a message, padded to 1 KiB), and the next checkpoint's
// compaction deletes those that fell out of its own tail.

// DefaultCheckpointTail is how many of the newest message-less entries a
// checkpoint keeps unless Config.CheckpointTail says otherwise.
const DefaultCheckpointTail = 1000

// noteLight records the positions of the entries of an applied batch that
// hold no message bytes; it keeps the newest Config.CheckpointTail of
// them.
func (s *Syncer) noteLight(batch []mailstore.Entry) {
	if s.cfg.CheckpointTail < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range batch {
		// An applied entry's kind is one this device reads (an unknown
		// kind does not open).
		if e.Cmd != nil && !e.Cmd.Kind.HoldsContent() {
			s.light = append(s.light, e.Pos)
		}
	}
	if n, t := len(s.light), s.cfg.CheckpointTail; n > 2*t {
		s.light = append(s.light[:0], s.light[n-t:]...)
	}
}

// forgetLight drops the record: the state was replaced (a restore or an
// adoption), and the positions before it are not known to hold what was
// applied. Callers hold s.mu.
func (s *Syncer) forgetLight() {
	s.light = s.light[:0]
}

// bytesPerKept is the API's CheckpointBytesPerKept: a spool takes a keep
// list of up to one position per 52 bytes of its checkpoint size limit.
// The live bodies alone never pass that (each comes with a message of the
// state, of at least 52 bytes); a tail is cut to stay within one position
// per 52 bytes of the checkpoint itself, so that no checkpoint the spool
// takes is refused for its tail.
const bytesPerKept = 52

// withTail returns keep (the positions a checkpoint at pos of size sealed
// bytes needs) with the newest Config.CheckpointTail recorded message-less
// positions at or before pos, as many as bytesPerKept allows, sorted and
// without repeats.
func (s *Syncer) withTail(keep []uint64, pos uint64, size int64) []uint64 {
	n := max(s.cfg.CheckpointTail, 0)
	n = min(n, max(0, int(size/bytesPerKept)-len(keep)))
	s.mu.Lock()
	end, _ := slices.BinarySearch(s.light, pos+1)
	tail := s.light[max(0, end-n):end]
	out := make([]uint64, 0, len(keep)+len(tail))
	out = append(out, keep...)
	out = append(out, tail...)
	s.mu.Unlock()
	slices.Sort(out)
	return slices.Compact(out)
}
