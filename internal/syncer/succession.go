package syncer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// The previous spool key vouched for. A device given only the new spool
// key after the spool's was replaced (a new device, set up later) meets
// the deliveries the old key signed before the cutover as a stranger's:
// entries by a key not trusted, followed by ones the spool key signed,
// which checkSpoolKey passes by. So when a read holds entries by a key
// not trusted and the cutover is not passed, the loop asks the spool for its succession statement (KeySuccessor; API
// route GET /v1/users/{user}/spool-keys, docs/API.md "Spool keys"), once,
// and checks its signature with the spool key given. A statement that
// verifies and names the key of one of those entries as the one the spool
// key replaced (not only the first's: entries by a stranger, or by a key
// two replacements back, may come before the previous key's in a read)
// makes it the previous key, trusted exactly as one given as
// Config.PreviousSpoolKey is: up to the cutover and not after it
// (refusePrevious), and recorded in the database the same way
// (PreviousKeeper, mailstore's ReplaceSpoolKey). A statement that does not
// verify, or names another key, changes nothing: the entries stay a
// stranger's. Only the holder of the spool key can make the statement,
// and that holder can sign deliveries already (docs/SECURITY.md, "A
// replaced spool key").
//
// After more than one replacement (A, then B, then C) the spool serves
// the whole succession, newest first (KeyChainer): C's statement of B,
// then B's of A, each verified under the key the one before names
// (keys.VerifyChain; a chain that does not hold is ignored whole). B is
// then the previous key as above, and A an earlier key, trusted up to its
// own cutover: the first entry applied signed by a later key of the
// chain (B or C), which the store records (EarlierKeeper; passEarlier,
// and keepEarlierCutovers for a restore). refusePrevious follows the
// newest key seen in log order, so an entry by a key older than it is
// refused.
//
// The statement is asked for at most once per Syncer while the answers
// are well-formed, or the spool answers it has no such route (a release
// before it: KeySuccessor's error wraps errors.ErrUnsupported, logged once
// as information); any other failed ask (the spool unreachable) is tried
// again at most once a strangerRecheck. An ask not answered within
// successionAskTimeout (30 s) failed. Until an ask is answered, the
// entries by a key not trusted before the cutover are held, not passed
// by: the loop applies what precedes the first of them and reads again
// after its backoff (errSuccessionPending), so that a spool or a proxy
// that fails the ask, or stalls it, delays the previous key's deliveries
// instead of losing them on the device.

// KeySuccessor is the optional capability of a Source to give the spool's
// statement of the key its spool key replaced: ok false when the spool
// states none (its key replaced none, as far as its store knows); an error
// wrapping errors.ErrUnsupported when the spool cannot state one (of a
// release before the statement).
type KeySuccessor interface {
	SpoolKeySuccession(ctx context.Context) (s keys.Succession, ok bool, err error)
}

// KeyChainer is the optional capability of a Source to give the spool's
// whole succession, newest first: the statement KeySuccessor gives, then
// the one the key it names made of the key it replaced, and so on (API
// route GET /v1/users/{user}/spool-keys, "earlier"); empty when the spool
// states none. Errors as KeySuccessor's. A Source with it is asked through
// it alone.
type KeyChainer interface {
	SpoolKeyChain(ctx context.Context) ([]keys.Succession, error)
}

// PreviousKeeper is the optional capability of a Store to record the key
// the spool key replaced (mailstore.Store.ReplaceSpoolKey); moved reports
// whether the database recorded previous as its spool key before.
type PreviousKeeper interface {
	ReplaceSpoolKey(ctx context.Context, key, previous []byte) (moved bool, err error)
}

// EarlierKeeper is the optional capability of a Store to record the keys
// before the previous one, as the spool's chain vouched for them, with
// each one's cutover (mailstore's ReplaceSpoolKeyChain, EarlierSpoolKeys,
// KeepEarlierSpoolKeyCutover).
type EarlierKeeper interface {
	ReplaceSpoolKeyChain(ctx context.Context, key []byte, previous [][]byte) (moved bool, err error)
	EarlierSpoolKeys(ctx context.Context) ([]mailstore.EarlierSpoolKey, error)
	KeepEarlierSpoolKeyCutover(ctx context.Context, key []byte, at uint64) error
}

// earlierKey is a spool key before the previous one, trusted for the
// deliveries before its cutover: the first entry applied signed by a
// later key of the succession (0: none yet).
type earlierKey struct {
	key     keys.PublicKey
	cutover uint64
}

// earlierCut is the cutover of the earlier key at index idx (keyIndexEd)
// found at pos in a batch.
type earlierCut struct {
	idx int
	pos uint64
}

// successionAskTimeout bounds the ask for the statements (Syncer's
// successionWait): an ask not answered by then failed, and is made again
// at most once a strangerRecheck.
const successionAskTimeout = 30 * time.Second

// successionState is what the loop learned of the spool's statements.
type successionState struct {
	mu       sync.Mutex
	asked    bool             // a well-formed answer was had: stated or none
	stated   []keys.PublicKey // the keys replaced, newest first, verified from the spool key; nil: none, or a chain that did not verify
	failedAt time.Time        // the last ask that failed; zero: none
}

// earlierKeys returns the spool keys before the previous one, newest
// first.
func (s *Syncer) earlierKeys() []earlierKey {
	if p := s.earlier.Load(); p != nil {
		return *p
	}
	return nil
}

// loadEarlier reads the earlier spool keys the store records.
func (s *Syncer) loadEarlier(ctx context.Context) error {
	ek, ok := s.cfg.Store.(EarlierKeeper)
	if !ok {
		return nil
	}
	recorded, err := ek.EarlierSpoolKeys(ctx)
	if err != nil {
		return err
	}
	if len(recorded) == 0 {
		s.earlier.Store(nil)
		return nil
	}
	earlier := make([]earlierKey, 0, len(recorded))
	for _, r := range recorded {
		k, err := keys.PublicKeyFromBytes(r.Key)
		if err != nil {
			return fmt.Errorf("an earlier spool key the database records: %w", err)
		}
		earlier = append(earlier, earlierKey{key: k, cutover: r.Cutover})
	}
	s.earlier.Store(&earlier)
	return nil
}

// seenInitially is refusePrevious's seen at the position the store
// applied: 0 once the spool key is the log's; else the newest key whose
// successor's cutover is recorded (an earlier key's cutover recorded at
// index i means a key newer than it signed).
func (s *Syncer) seenInitially() int {
	if s.cutoverPassed.Load() {
		return 0
	}
	seen := noneSeen
	for i, e := range s.earlierKeys() {
		if e.cutover != 0 {
			seen = min(seen, i+1)
		}
	}
	return seen
}

// cutsAt adds to cuts the cutovers at pos of the earlier keys that an
// entry signed by the key at index next passes, seen being the newest
// key seen before it: those at indexes above next, up to seen, with no
// cutover yet. The previous key's (index 1) is the spool key's first
// entry, which the store records with the key's use.
func (s *Syncer) cutsAt(cuts []earlierCut, pos uint64, next, seen int) []earlierCut {
	for i, e := range s.earlierKeys() {
		if idx := i + 2; idx > next && idx <= seen && e.cutover == 0 {
			cuts = append(cuts, earlierCut{idx: idx, pos: pos})
		}
	}
	return cuts
}

// passEarlier records the cutovers of earlier keys a batch up to last
// holds, before the batch is applied: from here on, their deliveries are
// refused, after a restart too. A failure to record one is logged: the
// device keeps it until it stops.
func (s *Syncer) passEarlier(ctx context.Context, cuts []earlierCut, last uint64) {
	if len(cuts) == 0 {
		return
	}
	earlier := slices.Clone(s.earlierKeys())
	ek, _ := s.cfg.Store.(EarlierKeeper)
	for _, c := range cuts {
		i := c.idx - 2
		if c.pos > last || i >= len(earlier) || earlier[i].cutover != 0 {
			continue
		}
		earlier[i].cutover = c.pos
		s.log.Info("an entry signed by a later spool key is applied: deliveries signed by an earlier spool key are refused from here on",
			"cutover", c.pos, "spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()),
			"earlier_spool_key_id", fmt.Sprintf("%x", earlier[i].key.KeyID()))
		if ek != nil {
			if err := ek.KeepEarlierSpoolKeyCutover(ctx, earlier[i].key.Bytes(), c.pos); err != nil {
				s.log.Warn("recording an earlier spool key's cutover failed", "err", err)
			}
		}
	}
	s.earlier.Store(&earlier)
}

// keepEarlierCutovers records the cutovers of the earlier keys that a
// restore's kept entries pass: for each, the first kept entry signed by a
// later key of the succession. The log before the checkpoint is not read
// again, so a cutover among its entries is learned here or never; one
// recorded at a kept entry after the true cutover refuses the same
// entries after the checkpoint.
func (s *Syncer) keepEarlierCutovers(ctx context.Context, kept *keptAuthors) {
	var cuts []earlierCut
	for i := range s.earlierKeys() {
		idx := i + 2
		var at uint64
		for a, pos := range kept.firsts {
			if j := s.keyIndexEd(ed25519.PublicKey(a)); j >= 0 && j < idx && (at == 0 || pos < at) {
				at = pos
			}
		}
		if at != 0 {
			cuts = append(cuts, earlierCut{idx: idx, pos: at})
		}
	}
	s.passEarlier(ctx, cuts, math.MaxUint64)
}

// trustVouched reopens the entries of lr (opened as opened, in place) that
// did not open for their author, when that is a previous spool key: the
// one given, or one the spool vouches for (vouched). Past the spool key's
// cutover it does nothing: every previous key's entries there are
// refused.
//
// It returns the position of the first entry left not opened for its
// author while the spool's statements are still to be had (the asks so
// far failed: the spool unreachable, or not answering within
// successionWait), else 0: such an entry may be an earlier key's, and is
// held, not passed by as a stranger's, until an ask is answered
// (readApply). Before, a failed ask had those entries passed by for good,
// and a new device given the new key lost the previous key's deliveries.
func (s *Syncer) trustVouched(ctx context.Context, lr spool.LogRead, opened []opened) (hold uint64) {
	if s.cutoverPassed.Load() || s.cfg.SpoolKey.Ed25519 == nil {
		return 0
	}
	for i := range opened {
		var ua *entry.UnknownAuthorError
		if !errors.As(opened[i].err, &ua) || lr.Entries[i].Data == nil {
			continue
		}
		if s.keyIndexEd(ua.Author) > 0 || s.vouched(ctx, ua.Author) {
			opened[i] = s.openOne(lr.Entries[i].Data)
			continue
		}
		if hold == 0 && s.successionPending() {
			hold = lr.Entries[i].Pos
		}
	}
	return hold
}

// errSuccessionPending: a read holds entries by a key not trusted before
// the cutover, and the spool's statements of the keys its spool key
// replaced could not be had yet: the loop holds before them and asks
// again (at most once a strangerRecheck).
var errSuccessionPending = errors.New("entries signed by a key not trusted wait for the spool's statement of the key its spool key replaced, whose ask failed")

// successionPending reports whether the spool's statement is still to be
// had: the Source can give it, and no ask was answered yet.
func (s *Syncer) successionPending() bool {
	switch s.cfg.Source.(type) {
	case KeyChainer, KeySuccessor:
	default:
		return false
	}
	st := &s.succession
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.asked
}

// vouched reports whether author is a previous spool key: one known, or
// one the spool's chain of statements, verified link by link from the
// spool key given, names; the keys of that chain are then the Syncer's
// previous and earlier keys, recorded in the store. False: it is not, or
// the statements could not be had, or did not verify.
func (s *Syncer) vouched(ctx context.Context, author ed25519.PublicKey) bool {
	if s.keyIndexEd(author) > 0 {
		return true
	}
	chain := s.askChain(ctx)
	if !slices.ContainsFunc(chain, func(k keys.PublicKey) bool { return k.Ed25519.Equal(author) }) {
		return false
	}
	prev := chain[0]
	if !s.previous.CompareAndSwap(nil, &prev) && !s.previousKey().Equal(prev) {
		s.log.Warn("the spool states that its spool key replaced another key than the previous spool key given: its statements are ignored",
			"spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()), "previous_spool_key_id", fmt.Sprintf("%x", s.previousKey().KeyID()),
			"stated_previous_spool_key_id", fmt.Sprintf("%x", prev.KeyID()))
		return false
	}
	s.log.Info("the spool key given replaced another, as the spool states under its signature: deliveries signed by the previous key are taken up to the first entry signed by the spool key, and refused after it",
		"spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()), "previous_spool_key_id", fmt.Sprintf("%x", prev.KeyID()), "keys_before", len(chain)-1)
	earlier := make([]earlierKey, 0, len(chain)-1)
	for _, k := range chain[1:] {
		c := uint64(0)
		for _, e := range s.earlierKeys() {
			if e.key.Equal(k) {
				c = e.cutover
			}
		}
		earlier = append(earlier, earlierKey{key: k, cutover: c})
	}
	if len(earlier) > 0 {
		s.earlier.Store(&earlier)
	}
	var err error
	switch st := s.cfg.Store.(type) {
	case EarlierKeeper:
		bs := make([][]byte, len(chain))
		for i, k := range chain {
			bs[i] = k.Bytes()
		}
		if _, err = st.ReplaceSpoolKeyChain(ctx, s.cfg.SpoolKey.Bytes(), bs); err == nil {
			err = s.loadEarlier(ctx)
		}
	case PreviousKeeper:
		_, err = st.ReplaceSpoolKey(ctx, s.cfg.SpoolKey.Bytes(), prev.Bytes())
	}
	if err != nil {
		s.log.Warn("recording the previous spool keys the spool vouched for failed: they are trusted until this device stops, and asked for again at its next start",
			"err", err)
	}
	return s.keyIndexEd(author) > 0
}

// askChain returns the keys the spool key replaced, newest first, as the
// spool's statements give them and they verify from the spool key given;
// nil: none, or the statements could not be had or did not verify. It
// asks once (above).
func (s *Syncer) askChain(ctx context.Context) []keys.PublicKey {
	var ask func(context.Context) ([]keys.Succession, error)
	switch src := s.cfg.Source.(type) {
	case KeyChainer:
		ask = src.SpoolKeyChain
	case KeySuccessor:
		ask = func(ctx context.Context) ([]keys.Succession, error) {
			st, ok, err := src.SpoolKeySuccession(ctx)
			if !ok || err != nil {
				return nil, err
			}
			return []keys.Succession{st}, nil
		}
	default:
		return nil
	}
	st := &s.succession
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.asked {
		return st.stated
	}
	if !st.failedAt.IsZero() && time.Since(st.failedAt) < strangerRecheck {
		return nil
	}
	// Bounded: the client paces reads alone, and a spool (or a proxy)
	// that took the ask and never answered held the sync loop, and with
	// it every read, until the device stopped.
	actx, cancel := context.WithTimeout(ctx, s.successionWait)
	chain, err := ask(actx)
	cancel()
	if errors.Is(err, errors.ErrUnsupported) {
		// A spool of a release without the route: it states
		// nothing, now or at the next ask, so once is enough.
		st.asked = true
		s.log.Info("the spool states no key its spool key replaced: its release does not serve the statement; entries signed by a key not trusted are taken as a stranger's",
			"err", err)
		return nil
	}
	if err != nil {
		st.failedAt = time.Now()
		s.log.Warn("asking the spool which key its spool key replaced failed; entries signed by a key not trusted are taken as a stranger's until asked again",
			"err", err)
		return nil
	}
	st.asked = true
	if len(chain) == 0 {
		return nil
	}
	prev, err := keys.VerifyChain(s.cfg.SpoolKey, chain)
	if err != nil {
		s.log.Warn("the spool's statements of the keys its spool key replaced do not verify from the spool key given: ignored",
			"err", err, "spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()))
		return nil
	}
	st.stated = prev
	return prev
}
