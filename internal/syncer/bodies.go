package syncer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"

	"cspool/internal/command"
	"cspool/internal/cores"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
)

// fetchBodies hands over the message bytes of the entries a restore needs:
// from the entries already read, then by reading the rest one by one when
// few are missing, else by scanning the (compacted, so mostly needed) log up
// to the last of them. The entries of a read are opened on all cores
// (openBodies), and while put takes one read's bodies the next read is
// made and opened (at most one read ahead), as the log's replay does
// (ahead.go). With the store's side of it (mailstore's bodyWriter), a
// restore of 10,000 messages of 10 KB takes 0.68x the time it took opening
// one entry after the other with no read ahead (docs/BENCHMARKS.md, "A new
// device's restore on all cores").
//
// kept, if not nil, is told who signed each entry handed over.
func (s *Syncer) fetchBodies(ctx context.Context, need []uint64, read []spool.Entry, put func(uint64, []byte) error, kept *keptAuthors) error {
	asked := make(map[uint64]bool, len(need)) // read by the openers; never written after this
	want := make(map[uint64]bool, len(need))  // what is still to come
	for _, p := range need {
		asked[p], want[p] = true, true
	}
	use := func(bodies []openedBody) error {
		for _, b := range bodies {
			if !want[b.pos] {
				continue
			}
			if b.err != nil {
				return b.err
			}
			delete(want, b.pos)
			kept.note(s, b)
			if err := put(b.pos, b.body); err != nil {
				return err
			}
		}
		return nil
	}
	if err := use(s.openBodies(read, asked)); err != nil {
		return err
	}
	need = need[:0:0]
	for p := range want {
		need = append(need, p)
	}
	if len(need) == 0 {
		return nil
	}
	slices.Sort(need)
	if len(need) <= 64 {
		for _, p := range need {
			lr, err := s.cfg.Source.ReadLog(ctx, p-1, 1, 1, 0)
			if err != nil {
				return err
			}
			if len(lr.Entries) == 0 || lr.Entries[0].Pos != p {
				return fmt.Errorf("entry %d is %w", p, ErrBodiesGone)
			}
			if err := use(s.openBodies(lr.Entries, asked)); err != nil {
				return err
			}
		}
		return nil
	}
	last := need[len(need)-1]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// readOpened reads the log after `after`, up to last, and opens what
	// the restore asked for, in the background.
	type readBodies struct {
		bodies []openedBody
		last   uint64 // the read's last position
		err    error
	}
	readOpened := func(after uint64) <-chan readBodies {
		ch := make(chan readBodies, 1)
		go func() {
			// Positions are dense: reading no more than the positions up
			// to last reads nothing after it (read after the restore).
			lr, err := s.cfg.Source.ReadLog(ctx, after, int(min(uint64(s.cfg.BatchCount), last-after)), s.cfg.BatchBytes, 0)
			if err != nil {
				ch <- readBodies{err: err}
				return
			}
			entries := lr.Entries
			if i := slices.IndexFunc(entries, func(e spool.Entry) bool { return e.Pos > last }); i >= 0 {
				entries = entries[:i]
			}
			// The read's sealed bytes are let go once opened: only the
			// messages wait for put.
			var at uint64
			if len(entries) > 0 {
				at = entries[len(entries)-1].Pos
			}
			ch <- readBodies{bodies: s.openBodies(entries, asked), last: at}
		}()
		return ch
	}
	pending := readOpened(need[0] - 1)
	// An error drops the read ahead: cancelled, and waited for, so that
	// nothing of it runs after fetchBodies returns.
	defer func() {
		if pending != nil {
			cancel()
			<-pending
		}
	}()
	for {
		r := <-pending
		pending = nil
		if r.err != nil {
			return r.err
		}
		if r.last == 0 {
			break
		}
		if r.last < last {
			pending = readOpened(r.last)
		}
		if err := use(r.bodies); err != nil {
			return err
		}
		if pending == nil {
			break
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("%d entries the checkpoint needs are %w", len(want), ErrBodiesGone)
	}
	return nil
}

// openedBody is an entry a restore asked for, opened: its message's
// bytes, or why it gives none.
type openedBody struct {
	pos    uint64
	body   []byte
	author ed25519.PublicKey // who signed it, checked
	err    error
}

// keptAuthors is who signed the entries a restore took its messages from,
// the entries its checkpoint keeps: what a new device learns of its spool
// key from them (checkKeptAuthors).
type keptAuthors struct {
	spool      int                  // entries signed by the spool key given
	spoolFirst uint64               // the first of them; 0: none
	stranger   *UntrustedSpoolError // those signed by neither that key, nor the previous one, nor the user's; nil: none
	firsts     map[string]uint64    // the first position each key but the user's signed, by its Ed25519 key (keepEarlierCutovers)
}

// note counts b, opened by s. An entry signed by the previous spool key
// (Config.PreviousSpoolKey), or one before it, is neither: the device that wrote the
// checkpoint applied it before the cutover, and it says nothing of the key
// given.
func (k *keptAuthors) note(s *Syncer, b openedBody) {
	if k != nil && !b.author.Equal(s.cfg.UserKey.Public().Ed25519) {
		if k.firsts == nil {
			k.firsts = map[string]uint64{}
		}
		if f, ok := k.firsts[string(b.author)]; !ok || b.pos < f {
			k.firsts[string(b.author)] = b.pos
		}
	}
	switch {
	case k == nil || b.author.Equal(s.cfg.UserKey.Public().Ed25519):
	case s.cfg.SpoolKey.Ed25519 != nil && b.author.Equal(s.cfg.SpoolKey.Ed25519):
		k.spool++
		if k.spoolFirst == 0 || b.pos < k.spoolFirst {
			k.spoolFirst = b.pos
		}
	case s.keyIndexEd(b.author) > 0:
	default:
		u := k.stranger
		if u == nil {
			u = &UntrustedSpoolError{Given: s.cfg.SpoolKey, First: b.pos, Last: b.pos}
			k.stranger = u
		}
		u.add(b.pos, b.author)
	}
}

// openBodies opens the entries of entries whose positions are in asked on
// all cores, their signatures checked in batches of up to sigBatch
// (entry.VerifyBatch), in the order of entries.
//
// The restore checks the bytes against the digest in the user-signed
// checkpoint, so an entry by a key other than the two trusted is opened
// under the key it names, its signature checked with it: the device whose
// checkpoint keeps it applied it as a delivery, and a new device whose
// spool key is not used yet learns from it that the key given is not the
// one that device trusted (keptAuthors, checkKeptAuthors).
func (s *Syncer) openBodies(entries []spool.Entry, asked map[uint64]bool) []openedBody {
	var at []int // the indexes in entries of those asked for
	for i, e := range entries {
		if asked[e.Pos] {
			at = append(at, i)
		}
	}
	out := make([]openedBody, len(at))
	cores.Each(len(at), sigBatch, func(from, to int) {
		us := make([]*entry.Unverified, 0, to-from)
		ok := make([]int, 0, to-from)
		for i := from; i < to; i++ {
			e := entries[at[i]]
			out[i].pos = e.Pos
			u, err := entry.OpenUnverified(e.Data, s.cfg.UserKey, s.cfg.User, s.trusted()...)
			var ua *entry.UnknownAuthorError
			if errors.As(err, &ua) {
				u, err = entry.OpenUnverified(e.Data, s.cfg.UserKey, s.cfg.User, keys.PublicKey{Ed25519: ua.Author})
			}
			if err != nil {
				out[i].err = fmt.Errorf("entry %d: %w", e.Pos, err)
				continue
			}
			us, ok = append(us, u), append(ok, i)
		}
		opens, errs := entry.VerifyBatch(us)
		for j, i := range ok {
			switch o, err := opens[j], errs[j]; {
			case err != nil:
				out[i].err = fmt.Errorf("entry %d: %w", out[i].pos, err)
			case o.Cmd.Kind != command.Deliver && o.Cmd.Kind != command.Append && o.Cmd.Kind != command.Body:
				out[i].err = fmt.Errorf("entry %d holds a %s, not a message", out[i].pos, o.Cmd.Kind)
			default:
				out[i].body, out[i].author = o.Cmd.Body, o.Author.Ed25519
			}
		}
	})
	return out
}
