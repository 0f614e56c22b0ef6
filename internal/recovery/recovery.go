// Package recovery puts back onto a spool restored from a backup what a
// device still holds beyond the restored head, and records it as a
// Restoration every other device of the user adopts (cspool recover).
//
// Implementation notes and invariants (docs/SECURITY.md §8 has the
// reasoning, docs/FORMAT.md the encodings):
//
//   - The restored head is found, not told: it is the last position at
//     which the chain hash this device recorded equals the spool's
//     (Cspool-Chain-Start of a read there), found by bisection over the
//     positions the device has a hash for. Before it both histories are
//     the same log; after it the device's history is superseded.
//   - Nothing is taken on trust from the spool: the entries after the
//     restored head are read and checked like any sync (contiguous, hashed
//     from the restored head's hash to the spool's head hash, each opened
//     with the user's and the spool's keys, the spool's allowed only to
//     deliver) before they are applied.
//   - The device's store is not changed: the rebase (mailstore.Rebase) runs
//     in one transaction that is rolled back. What the recovery leaves is
//     on the spool: Body entries with the bytes only this device's history
//     holds, then the Restoration, stored as the newest checkpoint at the
//     position its state is at and appended right after it. The device
//     adopts it afterwards like every other device (the syncer), so a
//     recovery interrupted anywhere can be run again.
//   - The checkpoint keeps every entry after the restored head, so another
//     device holding more of the superseded history can rebase onto the
//     same log and write a second restoration that holds both.
//   - Only the user's key signs what is written: a device takes neither a
//     Restoration nor a Body from the spool's key.
package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
	"cspool/internal/syncer"
)

// Errors of Recover.
var (
	// ErrNothingToRecover: the spool's log extends what this device
	// applied; it was not rolled back.
	ErrNothingToRecover = errors.New("the spool's log extends this device's history: nothing to recover")
	// ErrCovered: the spool already holds a restoration that holds this
	// device's history; syncing adopts it.
	ErrCovered = errors.New("a restoration on the spool already holds this device's history")
	// ErrNoCommonHistory: no position this device has a chain hash for
	// agrees with the spool, so the restored head cannot be found.
	ErrNoCommonHistory = errors.New("no common history with the spool")
	// ErrNothingInCommon: the spool's log of the user agrees with this
	// device's history on no entry (restored head 0), and
	// Config.OntoEmpty was not given. It is what another spool server
	// looks like, or one running on another directory: recovering there
	// would make its log this device's.
	ErrNothingInCommon = errors.New("the spool's log and this device's history agree on no entry (restored head 0)")
	// ErrCompacted: entries written after the restored head are gone from
	// the spool (a checkpoint compacted them), so they cannot be rebased.
	ErrCompacted = errors.New("entries after the restored head are gone from the spool")
	// ErrFork: a restoration on the spool holds history this device does
	// not, and this device holds history it does not.
	ErrFork = errors.New("a restoration on the spool holds history this device never applied")
)

// Config configures Recover. Zero fields take the documented defaults.
type Config struct {
	User     string
	UserKey  *keys.SecretKey
	SpoolKey keys.PublicKey
	// PreviousSpoolKey, if set, is the key SpoolKey replaced, trusted for
	// deliveries at the positions before the cutover, the first entry
	// signed by SpoolKey: the one the database records
	// (mailstore.Store.SpoolKeyCutover), or else the first the recovery
	// reads (syncer.Config.PreviousSpoolKey).
	PreviousSpoolKey keys.PublicKey
	// Source must also be a syncer.Checkpointer and a HeadAppender.
	Source syncer.Source
	Store  *mailstore.Store
	Logger *slog.Logger // nil: slog.Default()

	BatchCount int   // entries per read and per append; 0 = 1000
	BatchBytes int64 // bytes per read and per append; 0 = 4 MiB
	Attempts   int   // tries to append the Restoration where its state is; 0 = 5

	// OntoEmpty lets the recovery put the device's whole history back
	// onto a log that agrees with it on no entry: a spool restored from a
	// backup made before the user's first mail. Without it such a
	// recovery fails with ErrNothingInCommon and writes nothing.
	OntoEmpty bool

	// TempDir is the folder of the file the spool's newest checkpoint is
	// read into (syncer.FetchCheckpoint): the device database's, as the
	// syncer's. Empty: os.TempDir().
	TempDir string
}

// Report says what a recovery found and wrote.
type Report struct {
	Position   uint64 // this device's position
	Base       uint64 // the restored head: the last position the spool and this device agree on
	SpoolHead  uint64 // the spool's head when the recovery started
	Superseded int    // entries this device applied after Base, which the spool lost
	Replayed   int    // positions of the spool's log after Base applied after them
	Kept       int    // deletions of mailboxes the superseded history changed, refused (the mailboxes stay)

	Bodies    int   // messages whose bytes were put back (Body entries)
	BodyBytes int64 // their sealed size
	// Restoration is the position of the restoration's state (stored as a
	// checkpoint there); its entry is at Restoration+1.
	Restoration uint64
	StateBytes  int      // the sealed restoration's size
	Messages    int      // messages in the restored state
	Renewed     []string // mailboxes given a new UIDVALIDITY
	Attempts    int      // appends of the restoration (more than 1: mail arrived meanwhile)
}

// fill gives the fields left zero their documented defaults.
func (c *Config) fill() {
	if c.BatchCount == 0 {
		c.BatchCount = 1000
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 4 << 20
	}
	if c.Attempts == 0 {
		c.Attempts = 5
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Recover finds the restored head, rebases this device's history after it
// onto the spool's log, puts back the message bytes the spool lost, and
// writes the Restoration. The store is left as it was: syncing adopts the
// restoration afterwards.
func Recover(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Store == nil || cfg.Source == nil || cfg.UserKey == nil || cfg.User == "" {
		return nil, errors.New("recovery: store, source, user and user key are required")
	}
	cpr, ok := cfg.Source.(syncer.Checkpointer)
	if !ok {
		return nil, fmt.Errorf("recovery: %w", syncer.ErrNoCheckpoints)
	}
	ha, ok := cfg.Source.(HeadAppender)
	if !ok {
		return nil, errors.New("recovery: the source cannot append on a condition (if_head)")
	}
	cfg.fill()
	r := &recoverer{cfg: cfg, cpr: cpr, ha: ha, log: cfg.Logger.With("component", "recover", "user", cfg.User)}
	return r.run(ctx)
}

type recoverer struct {
	cfg Config
	cpr syncer.Checkpointer
	ha  HeadAppender
	log *slog.Logger
	rep Report

	rb    *mailstore.Rebase
	chain spool.Hash // at rb.Position()
	// cutover is the position of the first entry signed by the spool key,
	// after which the previous key's are refused; 0: none known yet.
	cutover uint64
}

// loadCutover reads where the database found the cutover, when a previous
// spool key is given: a key used without a position recorded (applied
// before schema 32) refuses the previous key everywhere.
func (r *recoverer) loadCutover(ctx context.Context) error {
	if r.cfg.PreviousSpoolKey.Ed25519 == nil {
		return nil
	}
	used, err := r.cfg.Store.SpoolKeyUsed(ctx)
	if err != nil {
		return err
	}
	if r.cutover, err = r.cfg.Store.SpoolKeyCutover(ctx); err != nil {
		return err
	}
	if used && r.cutover == 0 {
		r.cutover = 1
	}
	return nil
}

// trusted lists the keys whose entries the recovery opens.
func (r *recoverer) trusted() []keys.PublicKey {
	if r.cfg.PreviousSpoolKey.Ed25519 == nil {
		return []keys.PublicKey{r.cfg.UserKey.Public(), r.cfg.SpoolKey}
	}
	return []keys.PublicKey{r.cfg.UserKey.Public(), r.cfg.SpoolKey, r.cfg.PreviousSpoolKey}
}

// refusePrevious returns an error for o, opened at pos, if the previous
// spool key signed it after the cutover; an entry signed by the spool key
// is the cutover if none was known.
func (r *recoverer) refusePrevious(o *entry.Opened, pos uint64) error {
	switch {
	case r.cfg.PreviousSpoolKey.Ed25519 == nil:
	case o.Author.Equal(r.cfg.SpoolKey):
		if r.cutover == 0 {
			r.cutover = pos
		}
	case o.Author.Equal(r.cfg.PreviousSpoolKey) && r.cutover != 0 && pos > r.cutover:
		return &entry.UnknownAuthorError{Author: o.Author.Ed25519}
	}
	return nil
}

func (r *recoverer) run(ctx context.Context) (*Report, error) {
	st := r.cfg.Store
	pos, err := st.Position(ctx)
	if err != nil {
		return nil, err
	}
	r.rep.Position = pos
	if err := r.loadCutover(ctx); err != nil {
		return nil, err
	}
	lr, err := r.cfg.Source.ReadLog(ctx, pos, 1, 1, 0)
	if err != nil {
		return nil, fmt.Errorf("reading the spool's log: %w", err)
	}
	r.rep.SpoolHead = lr.Head
	if mine, ok, err := st.ChainAt(ctx, pos); err != nil {
		return nil, err
	} else if ok && lr.Chained && lr.Head >= pos && lr.StartHash == mine {
		return &r.rep, ErrNothingToRecover
	}
	if err := r.checkNewest(ctx, lr.Checkpoint); err != nil {
		return &r.rep, err
	}
	base, baseHash, err := r.findBase(ctx, min(pos, lr.Head))
	if err != nil {
		return &r.rep, err
	}
	r.rep.Base = base
	if base == 0 && pos > 0 && !r.cfg.OntoEmpty {
		return &r.rep, ErrNothingInCommon
	}
	r.log.Info("found the restored head", "base", base, "position", pos, "spool_head", lr.Head)
	if r.rb, err = st.BeginRebase(ctx, base, baseHash); err != nil {
		return &r.rep, err
	}
	defer r.rb.Close()
	r.chain = baseHash
	r.rep.Superseded = r.rb.Superseded()
	if err := r.follow(ctx); err != nil {
		return &r.rep, err
	}
	r.rep.Replayed = int(r.rb.Position() - base)
	if err := r.putBodiesBack(ctx); err != nil {
		return &r.rep, err
	}
	if err := r.writeRestoration(ctx, base, baseHash); err != nil {
		return &r.rep, err
	}
	return &r.rep, nil
}

// checkNewest refuses to recover when the spool's newest checkpoint is a
// restoration that already holds this device's history.
func (r *recoverer) checkNewest(ctx context.Context, cpPos uint64) error {
	if cpPos == 0 {
		return nil
	}
	cp, err := syncer.FetchCheckpoint(ctx, r.cpr, r.cfg.TempDir)
	if errors.Is(err, spool.ErrNoCheckpoint) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the spool's checkpoint: %w", err)
	}
	defer cp.Close()
	o, err := entry.OpenFrom(cp.Data, cp.Data.Size(), r.cfg.UserKey, r.cfg.User, r.cfg.UserKey.Public())
	if err != nil {
		return nil
	}
	sn, c, err := syncer.OpenStateFrom(o, o.Cmd.Position)
	if err != nil || c.Position != cp.Pos || len(sn.Superseded) == 0 {
		return nil
	}
	if err := r.cfg.Store.Covers(ctx, sn); err == nil {
		return fmt.Errorf("%w (at position %d)", ErrCovered, cp.Pos)
	}
	return nil
}

// spoolHash is the spool's chain hash at p.
func (r *recoverer) spoolHash(ctx context.Context, p uint64) (spool.Hash, error) {
	lr, err := r.cfg.Source.ReadLog(ctx, p, 1, 1, 0)
	if err != nil {
		return spool.Hash{}, fmt.Errorf("reading the spool's chain hash at %d: %w", p, err)
	}
	if f := chain.CheckRead(p, nil, lr.Claim()); f != nil {
		return spool.Hash{}, f
	}
	return lr.StartHash, nil
}

// findBase bisects the positions at or below upTo that this device has a
// chain hash for: the spool's hash equals the device's up to the restored
// head and differs after it.
func (r *recoverer) findBase(ctx context.Context, upTo uint64) (uint64, spool.Hash, error) {
	st := r.cfg.Store
	known, err := st.ChainPositions(ctx, upTo)
	if err != nil {
		return 0, spool.Hash{}, err
	}
	if len(known) == 0 || known[0] == 1 {
		known = append([]uint64{0}, known...) // the empty log's hash is zero
	}
	agrees := func(p uint64) (bool, spool.Hash, error) {
		mine, _, err := st.ChainAt(ctx, p)
		if err != nil {
			return false, mine, err
		}
		theirs, err := r.spoolHash(ctx, p)
		return err == nil && theirs == mine, mine, err
	}
	ok, h, err := agrees(known[0])
	if err != nil {
		return 0, h, err
	}
	if !ok {
		return 0, h, fmt.Errorf("%w: the spool's log differs from this device's already at position %d, the first it has a chain hash for (it was rebuilt from a checkpoint written after the backup)",
			ErrNoCommonHistory, known[0])
	}
	// known[lo] agrees; every known position after hi disagrees.
	lo, hi := 0, len(known)-1
	base := h
	for lo < hi {
		mid := (lo + hi + 1) / 2
		ok, h, err := agrees(known[mid])
		if err != nil {
			return 0, h, err
		}
		if ok {
			lo, base = mid, h
		} else {
			hi = mid - 1
		}
	}
	return known[lo], base, nil
}

// follow reads the spool's log from the rebase's position to its head,
// checks it as a sync does, and applies it in the rebase.
func (r *recoverer) follow(ctx context.Context) error {
	for {
		pos := r.rb.Position()
		lr, err := r.cfg.Source.ReadLog(ctx, pos, r.cfg.BatchCount, r.cfg.BatchBytes, 0)
		if err != nil {
			return fmt.Errorf("reading the spool's log after %d: %w", pos, err)
		}
		if f := chain.CheckRead(pos, nil, lr.Claim()); f != nil {
			return f
		}
		if lr.StartHash != r.chain {
			// Not the hash the recovery computed: the log changed under it
			// (another recovery, a second restore), and a recovery run
			// again starts from what the log now is.
			return fmt.Errorf("the spool's log changed under the recovery at position %d: start again", pos)
		}
		if len(lr.Entries) == 0 {
			if lr.Head > pos {
				return fmt.Errorf("%w: the spool has no entry after %d though its head is %d", ErrCompacted, pos, lr.Head)
			}
			return nil
		}
		if err := r.apply(ctx, pos, lr); err != nil {
			return err
		}
	}
}

// apply checks and applies one read.
func (r *recoverer) apply(ctx context.Context, pos uint64, lr spool.LogRead) error {
	var batch []mailstore.Entry
	var hashes []spool.Hash
	h, last := r.chain, pos
	for _, e := range lr.Entries {
		if e.Pos != last+1 {
			return fmt.Errorf("%w: the spool skipped from position %d to %d (a checkpoint at %d compacted them)", ErrCompacted, last, e.Pos, lr.Checkpoint)
		}
		h = spool.ChainNext(h, e.Data)
		hashes = append(hashes, h)
		last = e.Pos
		o, err := entry.Open(e.Data, r.cfg.UserKey, r.cfg.User, r.trusted()...)
		if err == nil {
			err = r.refusePrevious(o, e.Pos)
		}
		if err != nil {
			r.log.Warn("rejected entry", "pos", e.Pos, "reason", err)
			continue
		}
		author := mailstore.AuthorUser
		if !o.Author.Equal(r.cfg.UserKey.Public()) {
			author = mailstore.AuthorSpool
		}
		if o.Cmd.Kind == command.Restoration && author == mailstore.AuthorUser {
			if err := r.checkEarlier(ctx, o.Cmd, e.Pos); err != nil {
				return err
			}
		}
		previous := r.cfg.PreviousSpoolKey.Ed25519 != nil && o.Author.Equal(r.cfg.PreviousSpoolKey)
		batch = append(batch, mailstore.Entry{Pos: e.Pos, ID: o.ID, Author: author, Previous: previous, Cmd: o.Cmd})
	}
	if last == lr.Head {
		if f := chain.CheckHeadHash(last, h, lr.HeadHash); f != nil {
			return f
		}
	}
	res, err := r.rb.Apply(batch, last, hashes)
	if err != nil {
		return err
	}
	for _, o := range res.Outcomes {
		if o.Status == mailstore.Rejected && o.Reason == mailstore.ReasonKept {
			r.rep.Kept++
			r.log.Warn("a mailbox deleted after the restore holds changes from before it: kept", "pos", o.Pos, "detail", o.Detail)
		}
	}
	r.chain = h
	return nil
}

// checkEarlier looks at a restoration another device (or an interrupted
// recovery) wrote after the restored head: if it holds this device's
// history, there is nothing to add; if it holds history this device does
// not, rebasing would lose it.
func (r *recoverer) checkEarlier(ctx context.Context, c *command.Command, at uint64) error {
	if c.Position+1 != at {
		return nil // stale: it applies as nothing
	}
	sn, err := mailstore.DecodeSnapshot(c.Body)
	if err != nil {
		return nil
	}
	if err := r.cfg.Store.Covers(ctx, sn); err == nil {
		return fmt.Errorf("%w (at position %d)", ErrCovered, c.Position)
	}
	lacks, err := r.cfg.Store.Lacks(ctx, sn.Superseded)
	if err != nil {
		return err
	}
	if len(lacks) > 0 {
		return fmt.Errorf("%w (the restoration at position %d holds entry %s at position %d), and this device holds history it does not: the devices were shown different logs",
			ErrFork, c.Position, lacks[0].ID, lacks[0].Pos)
	}
	return nil
}

// putBodiesBack appends a Body entry for every live message body no entry
// on the spool holds, and applies them.
func (r *recoverer) putBodiesBack(ctx context.Context) error {
	digests, err := r.rb.MissingDigests()
	if err != nil {
		return err
	}
	for i := 0; i < len(digests); {
		var batch [][]byte
		var entries []mailstore.Entry
		var size int64
		for ; i < len(digests) && len(batch) < r.cfg.BatchCount && (len(batch) == 0 || size < r.cfg.BatchBytes); i++ {
			raw, err := r.rb.Body(digests[i])
			if err != nil {
				return err
			}
			c := &command.Command{Kind: command.Body, Body: raw}
			sealed, id, err := entry.Seal(c, r.cfg.UserKey, r.cfg.UserKey.Public(), r.cfg.User, nil)
			if err != nil {
				return err
			}
			batch = append(batch, sealed)
			entries = append(entries, mailstore.Entry{ID: id, Author: mailstore.AuthorUser, Cmd: c})
			size += int64(len(sealed))
		}
		if err := r.put(ctx, batch, entries); err != nil {
			return fmt.Errorf("putting message bytes back: %w", err)
		}
		r.rep.Bodies += len(batch)
		r.rep.BodyBytes += size
	}
	left, err := r.rb.MissingDigests()
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("%d message bodies put back are not in the spool's log", len(left))
	}
	return nil
}

// put appends a batch of this device's entries (sealed, and as the
// rebase applies them) right after the rebase's position, and applies it:
// what was sent is then what the log holds, so it is not read back. Mail
// that arrived first is followed, and the batch sent again.
func (r *recoverer) put(ctx context.Context, batch [][]byte, entries []mailstore.Entry) error {
	for range r.cfg.Attempts {
		pos := r.rb.Position()
		first, err := r.ha.AppendAt(ctx, r.cfg.User, pos, batch)
		if errors.Is(err, spool.ErrHeadMoved) {
			if err := r.follow(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		h := r.chain
		hashes := make([]spool.Hash, len(batch))
		for k, sealed := range batch {
			h = spool.ChainNext(h, sealed)
			hashes[k] = h
			entries[k].Pos = first + uint64(k)
		}
		if _, err := r.rb.Apply(entries, first+uint64(len(batch))-1, hashes); err != nil {
			return err
		}
		r.chain = h
		return nil
	}
	return fmt.Errorf("mail kept arriving: %d appends found the log moved on", r.cfg.Attempts)
}

// HeadAppender is a Source that appends only on a given head (the API's
// if_head, spool.HeadAppender): what the recovery appends lands right
// after what it applied, or not at all.
type HeadAppender interface {
	AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error)
}

// writeRestoration seals the rebased state as a Restoration, stores it as
// the newest checkpoint (keeping every entry after base) and appends it
// right after its state's position; mail that arrives in between is
// applied and the restoration written again.
func (r *recoverer) writeRestoration(ctx context.Context, base uint64, baseHash spool.Hash) error {
	for attempt := 1; attempt <= r.cfg.Attempts; attempt++ {
		r.rep.Attempts = attempt
		// The state is encoded from the rows straight into the sealed
		// entry: only the entry is held, which the append needs whole.
		var info mailstore.SnapshotInfo
		var renewed []string
		var sealed []byte
		err := r.rb.WriteSnapshot(func(i mailstore.SnapshotInfo, rn []string, encode func(io.Writer) error) error {
			info, renewed = i, rn
			c := &command.Command{Kind: command.Restoration, Position: i.Position, Digest: i.Digest[:],
				Base: &command.Head{Pos: base, Hash: baseHash[:]}}
			var buf bytes.Buffer
			sl, err := entry.NewSealer(&buf, c, i.Size, r.cfg.UserKey, r.cfg.UserKey.Public(), r.cfg.User, nil)
			if err != nil {
				return err
			}
			buf.Grow(int(sl.Size()) - buf.Len())
			if err := encode(sl); err != nil {
				return err
			}
			if err := sl.Close(); err != nil {
				return err
			}
			sealed = buf.Bytes()
			return nil
		})
		if err != nil {
			return err
		}
		keep := info.Keep
		for p := base + 1; p <= info.Position; p++ {
			keep = append(keep, p)
		}
		sort.Slice(keep, func(i, j int) bool { return keep[i] < keep[j] })
		_, err = r.cpr.PutCheckpoint(ctx, spool.Checkpoint{Pos: info.Position, Data: sealed}, keep)
		switch {
		case errors.Is(err, spool.ErrStaleCheckpoint):
			r.log.Info("a newer checkpoint was stored meanwhile; following the log and writing again", "pos", info.Position)
		case err != nil:
			return fmt.Errorf("storing the restoration at %d: %w", info.Position, err)
		default:
			_, err := r.ha.AppendAt(ctx, r.cfg.User, info.Position, [][]byte{sealed})
			if errors.Is(err, spool.ErrHeadMoved) {
				r.log.Info("entries arrived before the restoration; following the log and writing again", "pos", info.Position)
				break
			}
			if err != nil {
				return fmt.Errorf("appending the restoration: %w", err)
			}
			r.rep.Restoration, r.rep.StateBytes = info.Position, len(sealed)
			r.rep.Messages, r.rep.Renewed = info.Messages, renewed
			r.log.Info("restoration written", "pos", info.Position, "base", base, "sealed_bytes", len(sealed),
				"messages", info.Messages, "bodies_put_back", r.rep.Bodies, "renewed_uidvalidity", renewed)
			return nil
		}
		if err := r.follow(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("the restoration could not be appended right after its state in %d attempts: mail keeps arriving; try again", r.cfg.Attempts)
}
