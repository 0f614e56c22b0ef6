package chain

import (
	"bytes"
	"fmt"
)

// Kind names which check failed.
type Kind int

const (
	// RolledBack: the spool's head is behind a position the device
	// applied.
	RolledBack Kind = iota + 1
	// Unchained: a read at or below the head carries no chain hashes.
	Unchained
	// Rewritten: the read's start hash is not the device's own at its
	// position (rewritten, rolled back or forked).
	Rewritten
	// HeadMismatch: the entries up to the head, or the device's own hash
	// at the head, do not hash to the head hash the spool claims.
	HeadMismatch
	// Gap: the read skips positions.
	Gap
	// Reordered: a command claims its author had applied a position at or
	// after the command's own.
	Reordered
	// Fork: a command's author had applied another history at a position.
	Fork
	// Replay: an entry id was applied before.
	Replay
)

var kindNames = map[Kind]string{
	RolledBack: "rolled back", Unchained: "unchained", Rewritten: "rewritten",
	HeadMismatch: "head mismatch", Gap: "gap", Reordered: "reordered",
	Fork: "fork", Replay: "replay",
}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Failure is a failed check: at which position, what kind, and the words
// of the alarm.
type Failure struct {
	Kind   Kind
	Pos    uint64
	Detail string
}

func (f *Failure) Error() string { return f.Detail }

// Claim is what a spool says with a read of the log after a position: its
// head, and (Chained) the chain hashes at the read's start and at the head.
type Claim struct {
	Head      uint64
	Chained   bool
	StartHash Hash
	HeadHash  Hash
	// Empty: the read holds no entries.
	Empty bool
}

// CheckHead checks that a spool's head is not behind pos, a position the
// device applied.
func CheckHead(pos, head uint64) *Failure {
	if head < pos {
		return &Failure{RolledBack, pos, fmt.Sprintf(
			"the spool's head %d is behind position %d, which this device already applied: the log was rolled back", head, pos)}
	}
	return nil
}

// CheckRead checks a read after pos against mine, the device's chain hash
// at pos (nil if it has none: then only the head and the presence of the
// hashes are checked, and the caller may take c.StartHash as its own).
func CheckRead(pos uint64, mine *Hash, c Claim) *Failure {
	if f := CheckHead(pos, c.Head); f != nil {
		return f
	}
	if !c.Chained {
		// Every API v1 server sends the hashes with a read at or below its
		// head. Without them none of the checks below could run: a proxy
		// that strips them must not switch the checks off.
		return &Failure{Unchained, pos, fmt.Sprintf(
			"the spool's answer to a read after position %d carries no chain hashes (Cspool-Chain-Start, Cspool-Chain-Head), which every API v1 server sends: they were removed on the way, which would switch off the rollback and reordering checks", pos)}
	}
	if mine == nil {
		return nil
	}
	if c.StartHash != *mine {
		return &Failure{Rewritten, pos, fmt.Sprintf(
			"the spool's history up to position %d (hash %x) differs from the one this device applied (hash %x): rewritten, rolled back or forked",
			pos, c.StartHash[:6], mine[:6])}
	}
	if c.Empty && c.Head == pos && c.HeadHash != *mine {
		return &Failure{HeadMismatch, pos, fmt.Sprintf(
			"the spool's head hash at position %d differs from the one this device computed", pos)}
	}
	return nil
}

// CheckNext checks that an entry at pos follows last, the position before
// it; gap is the error the alarm's words end with.
func CheckNext(last, pos uint64, gap error) *Failure {
	if pos != last+1 {
		return &Failure{Gap, last, fmt.Sprintf(
			"the spool skipped from position %d to %d, and no valid checkpoint covers the gap: entries were dropped or withheld (%v)",
			last, pos, gap)}
	}
	return nil
}

// CheckHeadHash checks that the entries a read gave, up to the head at
// last, hash (got) to the head hash the spool claims.
func CheckHeadHash(last uint64, got, claimed Hash) *Failure {
	if got != claimed {
		return &Failure{HeadMismatch, last, fmt.Sprintf(
			"the entries up to position %d do not hash to the head the spool claims: entries were altered, dropped or reordered", last)}
	}
	return nil
}

// CheckSeenOrder checks that the command at position at claims a head
// (seenPos) its author had applied before it.
func CheckSeenOrder(at, seenPos uint64) *Failure {
	if seenPos >= at {
		return &Failure{Reordered, at, fmt.Sprintf(
			"entry %d claims its author had applied position %d, at or after the entry itself: entries were reordered or replayed", at, seenPos)}
	}
	return nil
}

// CheckSeen checks the head a command's author had applied (seenHash at
// seenPos) against mine, this device's hash at seenPos.
func CheckSeen(at, seenPos uint64, seenHash []byte, mine Hash) *Failure {
	if f := CheckSeenOrder(at, seenPos); f != nil {
		return f
	}
	if !bytes.Equal(mine[:], seenHash) {
		return &Failure{Fork, at, fmt.Sprintf(
			"the device that wrote entry %d saw a different history at position %d (hash %x, here %x): the spool showed devices different logs (fork)",
			at, seenPos, prefix(seenHash), mine[:6])}
	}
	return nil
}

// CheckReplay reports an entry at pos whose id (shown as id) the device
// applied before, at first; seen says whether it did.
func CheckReplay(pos, first uint64, id fmt.Stringer, seen bool) *Failure {
	if seen {
		return &Failure{Replay, pos, fmt.Sprintf("entry %d replays entry %d (same entry id %s)", pos, first, id)}
	}
	return nil
}

func prefix(b []byte) []byte {
	if len(b) > 6 {
		return b[:6]
	}
	return b
}

// CheckBase checks the head a restoration (the entry at position at,
// written at restoredAt) claims to have restored the log to (baseHash at
// basePos) against mine, this device's hash at basePos.
func CheckBase(at, restoredAt, basePos uint64, baseHash []byte, mine Hash) *Failure {
	if !bytes.Equal(mine[:], baseHash) {
		return &Failure{Fork, at, fmt.Sprintf(
			"the restoration at position %d restored the log to position %d with hash %x, but this device applied a different history there (hash %x): the spool showed its writer a different log (fork)",
			restoredAt, basePos, prefix(baseHash), mine[:6])}
	}
	return nil
}

// Vouch returns what a spool says of the chain with a read after pos of a
// log whose head is head: nothing past the head (a read there proves
// nothing, and a device treats it as the other checks say), else the
// hashes at pos and at the head, read with hashAt (the head's once when
// pos is the head). It is the one sequence the API's server, the
// in-process source and the test spools answer a read with; Empty is left
// for the caller.
func Vouch(pos, head uint64, hashAt func(pos uint64) (Hash, error)) (Claim, error) {
	c := Claim{Head: head}
	if pos > head {
		return c, nil
	}
	var err error
	if c.StartHash, err = hashAt(pos); err != nil {
		return Claim{}, err
	}
	c.HeadHash = c.StartHash
	if pos != head {
		if c.HeadHash, err = hashAt(head); err != nil {
			return Claim{}, err
		}
	}
	c.Chained = true
	return c, nil
}
