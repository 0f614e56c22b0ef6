package syncer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
)

// The previous spool key vouched for. A device given only the new spool
// key after the spool's was replaced (a new device, set up later) meets
// the deliveries the old key signed before the cutover as a stranger's:
// entries by a key not trusted, followed by ones the spool key signed,
// which checkSpoolKey passes by. So when a read holds entries by a key
// not trusted, and no previous key is known and the cutover is not passed,
// the loop asks the spool for its succession statement (KeySuccessor; API
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
// The statement is asked for at most once per Syncer while the answers
// are well-formed, or the spool answers it has no such route (a release
// before it: KeySuccessor's error wraps errors.ErrUnsupported, logged once
// as information); any other failed ask (the spool unreachable) is tried
// again at most once a strangerRecheck. An ask not answered within
// successionAskTimeout (30 s) failed.

// KeySuccessor is the optional capability of a Source to give the spool's
// statement of the key its spool key replaced: ok false when the spool
// states none (its key replaced none, as far as its store knows); an error
// wrapping errors.ErrUnsupported when the spool cannot state one (of a
// release before the statement).
type KeySuccessor interface {
	SpoolKeySuccession(ctx context.Context) (s keys.Succession, ok bool, err error)
}

// PreviousKeeper is the optional capability of a Store to record the key
// the spool key replaced (mailstore.Store.ReplaceSpoolKey); moved reports
// whether the database recorded previous as its spool key before.
type PreviousKeeper interface {
	ReplaceSpoolKey(ctx context.Context, key, previous []byte) (moved bool, err error)
}

// successionAskTimeout bounds the ask for the statement (Syncer's
// successionWait): an ask not answered by then failed, and is made again
// at most once a strangerRecheck.
const successionAskTimeout = 30 * time.Second

// successionState is what the loop learned of the spool's statement.
type successionState struct {
	mu       sync.Mutex
	asked    bool             // a well-formed answer was had: stated or none
	stated   *keys.Succession // verified; nil: none, or one that did not verify
	failedAt time.Time        // the last ask that failed; zero: none
}

// trustVouched reopens the entries of lr (opened as opened, in place) that
// did not open for their author, when that is the previous spool key: the
// one given, or one the spool vouches for (vouchedPrevious). Past the
// cutover it does nothing: the previous key's entries there are refused.
func (s *Syncer) trustVouched(ctx context.Context, lr spool.LogRead, opened []opened) {
	if s.cutoverPassed.Load() || s.cfg.SpoolKey.Ed25519 == nil {
		return
	}
	prev := s.previousKey()
	for i := range opened {
		var ua *entry.UnknownAuthorError
		if !errors.As(opened[i].err, &ua) || lr.Entries[i].Data == nil {
			continue
		}
		if prev.Ed25519 == nil {
			// Each author of the read is looked up: the first may be
			// a stranger's, or a key two back, and the previous key's
			// entries come after it (vouchedPrevious asks the spool
			// once, and says the rest from its answer).
			p := s.vouchedPrevious(ctx, ua.Author)
			if p.Ed25519 == nil {
				continue
			}
			prev = p
		}
		if prev.Ed25519.Equal(ed25519.PublicKey(ua.Author)) {
			opened[i] = s.openOne(lr.Entries[i].Data)
		}
	}
}

// vouchedPrevious returns the previous spool key if the spool's statement,
// verified with the spool key given, names author as the key the spool
// key replaced; it is then the Syncer's previous key, recorded in the
// store. Zero: it does not, or the statement could not be had.
func (s *Syncer) vouchedPrevious(ctx context.Context, author ed25519.PublicKey) keys.PublicKey {
	ks, ok := s.cfg.Source.(KeySuccessor)
	if !ok {
		return keys.PublicKey{}
	}
	st := &s.succession
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.asked {
		if !st.failedAt.IsZero() && time.Since(st.failedAt) < strangerRecheck {
			return keys.PublicKey{}
		}
		// Bounded: the client paces reads alone, and a spool (or a proxy)
		// that took the ask and never answered held the sync loop, and
		// with it every read, until the device stopped.
		actx, cancel := context.WithTimeout(ctx, s.successionWait)
		stated, ok, err := ks.SpoolKeySuccession(actx)
		cancel()
		if errors.Is(err, errors.ErrUnsupported) {
			// A spool of a release without the route: it states
			// nothing, now or at the next ask, so once is enough.
			st.asked = true
			s.log.Info("the spool states no key its spool key replaced: its release does not serve the statement; entries signed by a key not trusted are taken as a stranger's",
				"err", err)
			return keys.PublicKey{}
		}
		if err != nil {
			st.failedAt = time.Now()
			s.log.Warn("asking the spool which key its spool key replaced failed; entries signed by a key not trusted are taken as a stranger's until asked again",
				"err", err)
			return keys.PublicKey{}
		}
		st.asked = true
		if ok {
			if err := stated.Verify(s.cfg.SpoolKey); err != nil {
				s.log.Warn("the spool's statement of the key its spool key replaced does not verify under the spool key given: ignored",
					"err", err, "spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()))
			} else {
				st.stated = &stated
			}
		}
	}
	if st.stated == nil || !st.stated.Names(author) {
		return keys.PublicKey{}
	}
	prev := st.stated.Previous
	if !s.previous.CompareAndSwap(nil, &prev) {
		return s.previousKey()
	}
	s.log.Info("the spool key given replaced another, as the spool states under its signature: deliveries signed by the previous key are taken up to the first entry signed by the spool key, and refused after it",
		"spool_key_id", fmt.Sprintf("%x", s.cfg.SpoolKey.KeyID()), "previous_spool_key_id", fmt.Sprintf("%x", prev.KeyID()))
	if pk, ok := s.cfg.Store.(PreviousKeeper); ok {
		if _, err := pk.ReplaceSpoolKey(ctx, s.cfg.SpoolKey.Bytes(), prev.Bytes()); err != nil {
			s.log.Warn("recording the previous spool key the spool vouched for failed: it is trusted until this device stops, and asked for again at its next start",
				"err", err)
		}
	}
	return prev
}
