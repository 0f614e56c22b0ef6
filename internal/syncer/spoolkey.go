package syncer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// A device is given the spool's public key (--spool-key) and trusts the
// deliveries it signs; the database records it at the first sync
// (mailstore's TrustSpoolKey). An entry signed by any other key is
// rejected and passed by when one signed by the recorded key follows it:
// once the device has applied an entry signed by that key, it is the
// log's, and others are someone else's, a stranger flooding the log
// (below: those at the log's head wait). Before that, the key given may be
// the wrong one: another setup's spool.pub, a copy of the wrong file.
// Passing by every delivery then would leave an empty mailbox for good,
// since the position moves past them.
//
// So until the key is used (mailstore's SpoolKeyUsed), a batch that holds
// entries by a key not trusted and none by the spool key is checked
// against the rest of the log: the loop reads on, up to the head the
// batch's read gave, checking each entry (one chunk of it held at a time)
// for one signed by the spool key. Found, the key is the right one, the
// batch applies as always, its strangers passed by, and no batch is
// checked again. Not found, the batch is applied only up to its first
// entry by a key not trusted (cutBefore), and the loop stops there with an
// *UntrustedSpoolError, a permanent error whose hint says what to check,
// and a start with the right key reads the same entries again
// (TrustSpoolKey takes a key not used yet). How the log is cut into reads
// changes nothing of this. The positions read in vain are remembered
// (unsignedThrough), so that the loop's retries read only what came since.
//
// Once the key is used, the same holds for the entries by a key not
// trusted after the last one by the spool key: strangers followed by an
// entry the spool key signed are passed by, but those at the head of the
// log, with none by the spool key after them, stop the loop before them
// (an *UntrustedSpoolError with Used set), which reads again a minute
// later (strangerRecheck). That is what a device meets when the spool's
// key was replaced and it was not told yet: every delivery from then on
// is signed by the new key. Passed by, that mail never showed on the
// device, even once it was given the new key; stopped, the device applies
// it when started with the new key and --previous-spool-key. A stranger's
// entry at the head holds a device back only until the next delivery.
//
// A new device's first read may find the log compacted: it restores the
// newest checkpoint, whose messages come from the entries it keeps. Those
// the device that wrote the checkpoint applied as deliveries were signed
// by the spool key it trusted. So, the key not used yet, a restore whose
// kept entries include some signed by a key neither the user's nor the
// one given, and none by the one given, is checked against the log after
// the checkpoint the same way, and not made if that holds none either
// (checkKeptAuthors): the loop stops with an *UntrustedSpoolError naming
// the checkpoint. Before, the restore was made, and a first sync that
// found nothing after the checkpoint ended well; the wrong key showed
// only at the next delivery. A checkpoint that keeps no delivery says
// nothing of the key.
//
// A stranger able to write into the log of a user who has no delivery
// yet can so keep a new device from syncing until a delivery arrives; it
// could do as much by serving a replayed entry, which raises an alarm.
// The error names the key the entries name, unverified (no signature is
// checked under a key not trusted): it is never a key to pass as
// --spool-key without comparing it with the spool server's own.

// UntrustedSpoolError is the error of a batch that holds entries signed
// by neither the user's key nor the spool key given, and no entry signed
// by the spool key after them up to the read's head: while the database
// has applied none signed by it (the key given may be the wrong one), or,
// Used, after it has (the spool's key may have been replaced). Nothing
// from the first such entry on was applied.
type UntrustedSpoolError struct {
	Given   keys.PublicKey      // the spool key given (Config.SpoolKey)
	Authors []ed25519.PublicKey // the keys the entries name, distinct, in log order, at most maxAuthorsNamed
	First   uint64              // the first such entry's position
	Last    uint64              // the last one's
	Count   int                 // how many the batch holds
	Through uint64              // the log holds no entry signed by Given up to this position
	// Checkpoint is the position of the checkpoint that keeps the
	// entries, when they are those of a restore, which was not made; 0:
	// entries read from the log.
	Checkpoint uint64
	// Used: the database has applied entries signed by Given before
	// these.
	Used bool
}

// strangerRecheck bounds the wait before the loop reads again after an
// *UntrustedSpoolError once the key is used: entries by a key not trusted
// at the log's head stop it only until an entry by the spool key follows
// them, usually the next delivery.
const strangerRecheck = time.Minute

// maxAuthorsNamed is how many of the keys a batch's untrusted entries name
// an UntrustedSpoolError lists.
const maxAuthorsNamed = 3

func (e *UntrustedSpoolError) Error() string {
	names := make([]string, len(e.Authors))
	for i, a := range e.Authors {
		names[i] = fmt.Sprintf("%x", []byte(a))
	}
	kept, what := "", fmt.Sprintf("nothing applied from position %d on", e.First)
	if e.Checkpoint != 0 {
		kept = fmt.Sprintf(", which the checkpoint at position %d keeps,", e.Checkpoint)
		what = fmt.Sprintf("the checkpoint at position %d was not restored", e.Checkpoint)
	}
	where := fmt.Sprintf("the entry at position %d of the spool's log%s is", e.First, kept)
	if e.Count > 1 {
		where = fmt.Sprintf("%d entries at positions %d to %d of the spool's log%s are", e.Count, e.First, e.Last, kept)
	}
	applied := "and this database has applied none"
	if e.Used {
		applied = "though this database applied entries signed by it before"
	}
	return fmt.Sprintf("%s signed by the Ed25519 key %s, not by the spool key given (key id %x, Ed25519 key %x); no entry of the log up to position %d is signed by that key, %s: %s",
		where, strings.Join(names, ", "), e.Given.KeyID(), []byte(e.Given.Ed25519), e.Through, applied, what)
}

// Hint says what a person does about it.
func (e *UntrustedSpoolError) Hint() string {
	if e.Used {
		return fmt.Sprintf("the spool's key may have been replaced (ask the spool's operator for the new spool.pub; the server logs its spool_key_id at start, the key given here has id %x): start again with the new one as --spool-key and the one given now as --previous-spool-key (docs/OPERATING.md, \"Replacing the spool key: the devices\"), and these entries are read again and applied. Do not pass the key this message names without checking it against the server's. If the spool's key was not replaced, these entries were written into the log by someone else: report it to the spool's operator",
			e.Given.KeyID())
	}
	return fmt.Sprintf("check --spool-key: it must be the public key of the spool server this device syncs with (the server logs its spool_key_id at start; the key given has id %x). If it is not, start again with the right one: this database takes it and reads these entries again. Do not pass the key this message names without checking it against the server's. If the key given is the server's, these entries were written into the log by someone else: report it to the spool's operator",
		e.Given.KeyID())
}

// loadKeyUsed reads whether the store's spool key is the log's already.
func (s *Syncer) loadKeyUsed(ctx context.Context) error {
	used, err := s.cfg.Store.SpoolKeyUsed(ctx)
	if err != nil {
		return err
	}
	s.keyUsed.Store(used)
	s.cutoverPassed.Store(used)
	return s.loadEarlier(ctx)
}

// checkSpoolKey returns an *UntrustedSpoolError if v, a verified batch of
// the read lr whose entries opened as opened, must not be applied: the
// spool key is not used yet (keyUsed), the batch holds entries by a key not
// trusted, and the log holds none by the spool key, in the batch or after
// it up to the read's head.
func (s *Syncer) checkSpoolKey(ctx context.Context, v *verified, lr spool.LogRead, opened []opened) error {
	used := s.keyUsed.Load()
	if used && v.last <= s.signedAt {
		// Strangers before an entry by the spool key found ahead.
		return nil
	}
	if !used && mailstore.SpoolSigned(v.batch) {
		return nil
	}
	// The key used, strangers followed by an entry signed by the spool key
	// in this batch are passed by; those after its last one are checked.
	var lastSigned uint64
	if used {
		for _, e := range v.batch {
			if e.Author == mailstore.AuthorSpool && !e.Previous {
				lastSigned = e.Pos
			}
		}
	}
	var u *UntrustedSpoolError
	for i, e := range lr.Entries {
		if e.Pos > v.last {
			break
		}
		var ua *entry.UnknownAuthorError
		if e.Pos < lastSigned || !errors.As(opened[i].err, &ua) {
			continue
		}
		if used && s.keyIndexEd(ua.Author) > 0 {
			// A previous key's after its cutover (refusePrevious).
			continue
		}
		if u == nil {
			u = &UntrustedSpoolError{Given: s.cfg.SpoolKey, First: e.Pos, Last: e.Pos, Used: used}
		}
		u.add(e.Pos, ua.Author)
	}
	if u == nil {
		return nil
	}
	if found, err := s.keySignsAfter(ctx, v.last, lr.Head); found || err != nil {
		return err
	}
	u.Through = max(v.last, s.unsignedThrough)
	return u
}

// add counts the entry at pos, signed by author, among e's.
func (e *UntrustedSpoolError) add(pos uint64, author ed25519.PublicKey) {
	e.First, e.Last = min(e.First, pos), max(e.Last, pos)
	e.Count++
	known := false
	for _, a := range e.Authors {
		known = known || a.Equal(author)
	}
	if !known && len(e.Authors) < maxAuthorsNamed {
		e.Authors = append(e.Authors, author)
	}
}

// keySignsAfter reports whether the log after position after, up to
// head, holds an entry signed by the spool key given (spoolSignedAfter),
// reading only what it did not read in vain before (unsignedThrough).
// When it does, the key is the log's: the batches up to that entry, a
// stranger's, are not read twice more (the store records the key as used
// when the entry applies; after a restart before that, one read again
// finds it).
func (s *Syncer) keySignsAfter(ctx context.Context, after, head uint64) (bool, error) {
	found, through, err := s.spoolSignedAfter(ctx, max(after, s.unsignedThrough), head)
	if err != nil {
		return false, err
	}
	if found {
		s.keyUsed.Store(true)
		s.signedAt = max(s.signedAt, through)
		return true, nil
	}
	s.unsignedThrough = max(s.unsignedThrough, through)
	return false, nil
}

// checkKeptAuthors returns an *UntrustedSpoolError if a restore from the
// checkpoint at cp, whose kept entries were signed as kept says, must not
// be committed: the spool key is not used yet (keyUsed), the checkpoint
// keeps entries signed by neither the user's key nor the spool key given
// and none by the spool key, and the log holds no entry by it after cp up
// to head either. Those entries are messages the device that wrote the
// checkpoint applied as deliveries, signed by the spool key it trusted:
// a key other than the one given. Before, such a device restored the
// checkpoint, and a first sync that found nothing after it ended well;
// the wrong key was found only at the next delivery.
//
// A checkpoint that keeps no delivery (its messages were all appended
// by the user's devices, or there are none) says nothing of the key:
// what follows it does, as on any log (checkSpoolKey).
func (s *Syncer) checkKeptAuthors(ctx context.Context, kept *keptAuthors, cp, head uint64) error {
	u := kept.stranger
	if s.keyUsed.Load() || kept.spool > 0 {
		return nil
	}
	if u != nil && slices.ContainsFunc(u.Authors, func(a ed25519.PublicKey) bool { return s.vouched(ctx, a) }) {
		// Signed by a key the spool key succeeded, as the spool states
		// under the key given (succession.go): the key given is the one
		// the spool signs with now, and these are deliveries before the
		// cutovers. The others may be by a key whose replacement the
		// spool states no more (a link whose new key ran only with a
		// release before the statements), which the device that wrote
		// the checkpoint trusted. Before, only a checkpoint whose
		// deliveries were all by vouched keys was taken so, and a new
		// device stopped here until the first delivery signed by the
		// key given.
		u = nil
	}
	if u == nil {
		s.log.Warn("the spool key given is not checked yet: the checkpoint restored keeps no delivery, so nothing in it says which key signs this spool's deliveries; the first delivery read checks it",
			"checkpoint", cp, "spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()))
		return nil
	}
	if found, err := s.keySignsAfter(ctx, cp, head); found || err != nil {
		return err
	}
	u.Through, u.Checkpoint = max(cp, s.unsignedThrough), cp
	return u
}

// spoolSignedAfter reads the log after position after, up to head, for an
// entry signed by the spool key given, checking each entry with that key
// alone trusted, without keeping its plaintext; it returns whether it
// found one, and the position of the one it found, else the last
// position it read.
func (s *Syncer) spoolSignedAfter(ctx context.Context, after, head uint64) (bool, uint64, error) {
	for after < head {
		lr, err := s.cfg.Source.ReadLog(ctx, after, s.cfg.BatchCount, s.cfg.BatchBytes, 0)
		if err != nil {
			return false, after, err
		}
		if len(lr.Entries) == 0 {
			break
		}
		for _, e := range lr.Entries {
			if e.Pos <= after {
				// Not in order: the batch's own checks say so when it
				// gets there.
				return false, after, nil
			}
			after = e.Pos
			// OpenFrom holds a chunk of the plaintext at a time, not a
			// large message's or checkpoint's whole.
			if _, err := entry.OpenFrom(bytes.NewReader(e.Data), int64(len(e.Data)), s.cfg.UserKey, s.cfg.User, s.cfg.SpoolKey); err == nil {
				return true, after, nil
			}
		}
	}
	return false, after, nil
}

// cutBefore drops from v the positions from first on, which
// checkSpoolKey declined, keeping what precedes them to be applied (a
// device's own changes made after a checkpoint it rebuilt from, say);
// pos is the position v was read after. It reports whether anything is
// left. An alarm found past them is dropped: it is found again when the
// loop reads those positions with the right key.
func (v *verified) cutBefore(first, pos uint64) bool {
	if first <= pos+1 {
		return false
	}
	keep := first - 1
	v.batch = slices.DeleteFunc(v.batch, func(e mailstore.Entry) bool { return e.Pos > keep })
	n := 0
	for i, r := range v.unopened {
		if r.Pos <= keep {
			v.unopened[n], v.whyNot[n] = r, v.whyNot[i]
			n++
		}
	}
	v.unopened, v.whyNot = v.unopened[:n], v.whyNot[:n]
	v.rejected = n
	v.misdelivered = slices.ContainsFunc(v.whyNot, func(err error) bool { return errors.Is(err, entry.ErrNotForUser) })
	v.hashes = v.hashes[:keep-pos]
	v.last = keep
	v.alarm = nil
	return true
}

// The spool key replaced. A device given the key the spool's key replaced
// as well (Config.PreviousSpoolKey) trusts deliveries signed by it at the
// positions of the log before the first entry signed by the spool key
// given: the cutover, after which the spool refuses the previous key. An
// entry signed by the previous key after the cutover is what one signed by
// any key not trusted is (refusePrevious): rejected as "entry author not
// trusted", reported and passed by. The database records the cutover with
// the key's use (mailstore's SpoolKeyUsed, SpoolKeyCutover), in the apply
// that first holds an entry signed by the key given, so a restart keeps
// it; a restore whose checkpoint keeps such an entry records it too
// (keepCutover), since the log before the checkpoint is not read again.
// What the previous key signed before the cutover is applied as any
// delivery by a key the device trusts: whoever holds that key (leaked)
// could place mail there only until the spool refused it.

// trusted lists the keys whose entries the loop opens: the user's, the
// spool's, the previous spool key when one is given or learned, and the
// earlier ones the spool's chain vouched for (succession.go).
func (s *Syncer) trusted() []keys.PublicKey {
	t := []keys.PublicKey{s.cfg.UserKey.Public(), s.cfg.SpoolKey}
	if prev := s.previousKey(); prev.Ed25519 != nil {
		t = append(t, prev)
	}
	for _, e := range s.earlierKeys() {
		t = append(t, e.key)
	}
	return t
}

// previousKey is the previous spool key: Config.PreviousSpoolKey, or the
// one the spool vouched for (succession.go); zero: none.
func (s *Syncer) previousKey() keys.PublicKey {
	if p := s.previous.Load(); p != nil {
		return *p
	}
	return keys.PublicKey{}
}

// byPrevious reports whether o was signed by the previous spool key, or
// one before it (succession.go).
func (s *Syncer) byPrevious(o *entry.Opened) bool {
	return s.keyIndexEd(o.Author.Ed25519) > 0
}

// keyIndexEd places author (an Ed25519 key) in the succession of spool
// keys the device trusts: 0 the spool key given, 1 the previous one, 2
// the one before it (the first of earlierKeys), and so on; -1: none of
// them.
func (s *Syncer) keyIndexEd(author ed25519.PublicKey) int {
	switch {
	case author == nil:
		return -1
	case s.cfg.SpoolKey.Ed25519 != nil && s.cfg.SpoolKey.Ed25519.Equal(author):
		return 0
	}
	if prev := s.previousKey(); prev.Ed25519 != nil && prev.Ed25519.Equal(author) {
		return 1
	}
	for i, e := range s.earlierKeys() {
		if e.key.Ed25519.Equal(author) {
			return i + 2
		}
	}
	return -1
}

// noneSeen: no spool key of the succession has signed an entry applied.
const noneSeen = math.MaxInt

// refusePrevious applies the cutovers to op, an entry of a read taken in
// log order, passed seen: the newest key of the succession (keyIndexEd)
// that signed an entry before it. An entry signed by an older key than
// seen is past that key's cutover: it is made one that did not open, by a
// key not trusted. It returns seen for the next entry: op's key's index,
// when it is newer.
func (s *Syncer) refusePrevious(op *opened, seen int) int {
	if op.err != nil || op.o == nil {
		return seen
	}
	j := s.keyIndexEd(op.o.Author.Ed25519)
	switch {
	case j < 0:
	case j > seen:
		op.err = &entry.UnknownAuthorError{Author: bytes.Clone(op.o.Author.Ed25519)}
		op.o, op.prep = nil, nil
	default:
		return j
	}
	return seen
}

// passCutover notes that batch, applied, holds an entry signed by the
// spool key given: from here on the previous key's are refused. The first
// time, with a previous key given, it is logged with the cutover's
// position.
func (s *Syncer) passCutover(batch []mailstore.Entry) {
	prev := s.previousKey()
	if s.cutoverPassed.Swap(true) || prev.Ed25519 == nil {
		return
	}
	i := slices.IndexFunc(batch, func(e mailstore.Entry) bool { return e.Author == mailstore.AuthorSpool && !e.Previous })
	if i < 0 {
		return
	}
	s.log.Info("the first entry signed by the new spool key is applied: deliveries signed by the previous spool key are refused from here on",
		"cutover", batch[i].Pos, "spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()),
		"previous_spool_key_id", fmt.Sprintf("%x", prev.KeyID()))
}

// CutoverKept is the optional capability of a Store to record that the
// state a checkpoint restored holds a delivery signed by its spool key,
// the first at position at (mailstore.Store.KeepSpoolKeyCutover): the key
// is used, and the previous key's deliveries after it are refused at the
// next start too.
type CutoverKept interface {
	KeepSpoolKeyCutover(ctx context.Context, at uint64) error
}

// keepCutover notes that a restore's kept entries hold one signed by the
// spool key given, the first at position at: the key is the log's, and the
// cutover lies at or before at. A failure to record it is logged: the
// device then knows it until it stops, and the next delivery records it.
func (s *Syncer) keepCutover(ctx context.Context, at uint64) {
	s.keyUsed.Store(true)
	s.cutoverPassed.Store(true)
	if ck, ok := s.cfg.Store.(CutoverKept); ok {
		if err := ck.KeepSpoolKeyCutover(ctx, at); err != nil {
			s.log.Warn("recording that the checkpoint restored keeps a delivery signed by the spool key failed", "err", err)
		}
	}
}
