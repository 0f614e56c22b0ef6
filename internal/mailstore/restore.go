package mailstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"cspool/internal/command"
	"cspool/internal/cores"
)

// BodyFetcher supplies the bytes of the entries a Restore needs: it calls
// put once for each position in need, in any order. put checks the bytes
// against the snapshot's digest and stores them.
type BodyFetcher func(ctx context.Context, need []uint64, put func(pos uint64, raw []byte) error) error

// Restore replaces the whole replicated state with sn, in one transaction
// (the bodies it fetches are committed before it, restore): a device that
// fell behind a compaction, or a new device, continues from sn.Position as
// if it had applied the log up to there. sn must extend what
// this store knows of the log, or Restore refuses it with a *Contradiction
// (checkHistory). Bodies the store
// already holds (same SHA-256) are reused; the others are asked of fetch.
// Local rejection records are kept. The Result lists, as Changes, how the
// state differs from before (so IMAP sessions see expunges, new messages
// and flag changes, and no UIDVALIDITY change where the mailbox is the
// same; past restoreChangesMax, a mailbox's are one MailboxRestored).
func (s *Store) Restore(ctx context.Context, sn *Snapshot, fetch BodyFetcher) (*Result, error) {
	if err := sn.check(); err != nil {
		return nil, err
	}
	res, _, _, err := s.restore(ctx, stageSnapshot(sn), nil, fetch, false)
	return res, err
}

// Restored describes the state RestoreFrom or AdoptFrom restored.
type Restored struct {
	// Head is the state without its messages and entry lists.
	Head *Snapshot
	// Messages, Bodies and Superseded count the state's messages, the
	// entries holding their bodies (Snapshot.Keep) and its superseded
	// entries.
	Messages, Bodies, Superseded int
}

// StateError is a RestoreFrom or AdoptFrom that found the state it read
// malformed (ErrSnapshot), or whose check refused it: nothing was changed,
// and the state is not to be tried again.
type StateError struct{ Err error }

func (e *StateError) Error() string { return e.Err.Error() }
func (e *StateError) Unwrap() error { return e.Err }

// RestoreFrom is Restore of the encoded state read from r, decoded as it
// is read (it accepts what ReadSnapshot accepts) without holding it: its
// messages and entries are staged in the restore's tables as they are
// decoded (restorestage.go). check, when not nil, is called with what was read
// (the state without its messages and entry lists, and their counts) once
// all of it is read and checked, before anything is compared with the
// store; an error from it ends the restore, which changed nothing. A
// malformed state, or one check refuses, is a *StateError.
func (s *Store) RestoreFrom(ctx context.Context, r io.Reader, check func(*Restored) error, fetch BodyFetcher) (*Result, *Restored, error) {
	d := &snapDecoder{r: bufio.NewReaderSize(r, 32<<10)}
	res, _, info, err := s.restore(ctx, stageDecoded(d), check, fetch, false)
	return res, info, err
}

// StagedRestore is a restore whose first three steps have run (restore):
// its state is staged and checked, the bodies the store lacked are
// stored, and its messages and entries are written into copies of the
// store's tables, but the store's state is the old one until Commit. Between the
// steps, and until Commit, the store takes other writes (a local change,
// queued and applied provisionally), which Commit checks again and
// applies again on top of the restored state. Commit or Close it.
type StagedRestore struct {
	s     *Store
	g     *stager
	sn    *Snapshot
	info  *Restored
	fresh int64
	fetch BodyFetcher
	adopt bool
	open  bool
	// built counts the messages written into the copy of messages
	// before the last step (buildState).
	built int64
}

// StageRestoreFrom runs the first three steps of RestoreFrom (the state
// read, staged and checked; the bodies the store lacks fetched and
// stored; the messages and entries written beside the store's), each
// holding the store's write lock only while it writes, and returns the
// restore ready for its last step, Commit. Its errors are RestoreFrom's;
// after one, nothing is left to close.
func (s *Store) StageRestoreFrom(ctx context.Context, r io.Reader, check func(*Restored) error, fetch BodyFetcher) (*StagedRestore, error) {
	d := &snapDecoder{r: bufio.NewReaderSize(r, 32<<10)}
	return s.stageRestore(ctx, stageDecoded(d), check, fetch, false)
}

// Restored describes the state staged.
func (p *StagedRestore) Restored() *Restored { return p.info }

// Commit runs the restore's last step: in one transaction, the checks
// against the store again, the changes sessions hear (the Result), the
// state put in the place of the old one (the tables written before it
// renamed, not written again), and the queued changes applied again on
// top. After it, committed or not, the restore's tables and the bodies it
// stored that no message uses are gone; a second Commit fails.
func (p *StagedRestore) Commit(ctx context.Context) (*Result, error) {
	res, _, err := p.commit(ctx)
	return res, err
}

func (p *StagedRestore) commit(ctx context.Context) (*Result, *Adoption, error) {
	if !p.open {
		return nil, nil, errors.New("mailstore: the restore was committed or closed already")
	}
	res, ad, err := p.s.replaceState(ctx, p)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	p.open = false
	return res, ad, nil
}

// Close gives up a restore not committed: its tables go, and the bodies
// it stored that no message uses. What it cannot remove (the store closed,
// a full disk) the next restore or the next open removes. Close after
// Commit does nothing.
func (p *StagedRestore) Close() {
	if !p.open {
		return
	}
	p.open = false
	_ = p.s.dropStaged(context.Background(), p.fresh)
}

// restore is Restore, or Adopt when adopt is set (restoration.go), of the
// state stage writes into the restore's tables, in four steps, each
// holding the store's write lock only while it writes:
//
//  1. stageState reads the state into the restore's tables, a run of
//     stageRun rows a transaction, and checks it (check, and the checks
//     against the store, which need not the write lock unless changes are
//     queued or it adopts);
//  2. storeBodies stores the bodies the state names that the store lacks,
//     asking fetch for them stageRun positions at a time, parsing them
//     without the lock and writing bodyGroupBytes of them a transaction;
//  3. buildState writes the state's messages and entries into copies of
//     the store's tables (restoreswap.go), stageRun rows a transaction;
//  4. replaceState checks the staged state against the store, and puts
//     it in the place of the old one, in one transaction, which renames
//     the copies and drops the other tables (StagedRestore.Commit: the
//     syncer runs it alone under its own lock, so that sessions hear its
//     changes in the order the store made them); what it writes is as
//     much as the changes queued meanwhile, and the mailboxes.
//
// The old state is changed only by the last step's commit. Before it,
// the store holds besides its state only the tables and bodies no message
// uses, each stored for a position of the state: a step that fails
// removes them (dropStaged), and after a crash the next restore reuses
// the bodies (the state's are not fetched again) and its count of the
// references removes the others (recount); the tables go when the store
// is opened again (dropLeftStage) or at the next restore.
func (s *Store) restore(ctx context.Context, stage func(*stager) (*Snapshot, error), check func(*Restored) error,
	fetch BodyFetcher, adopt bool) (*Result, *Adoption, *Restored, error) {
	p, err := s.stageRestore(ctx, stage, check, fetch, adopt)
	if err != nil {
		return nil, nil, nil, err
	}
	res, ad, err := p.commit(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	return res, ad, p.info, nil
}

// stageRestore runs restore's first three steps.
func (s *Store) stageRestore(ctx context.Context, stage func(*stager) (*Snapshot, error), check func(*Restored) error,
	fetch BodyFetcher, adopt bool) (*StagedRestore, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	g, sn, info, err := s.stageState(ctx, stage, check, adopt)
	if err != nil {
		return nil, err
	}
	p := &StagedRestore{s: s, g: g, sn: sn, info: info, fetch: fetch, adopt: adopt, open: true}
	if p.fresh, err = s.storeBodies(ctx, g, fetch); err != nil {
		p.Close()
		return nil, err
	}
	if err := s.buildState(ctx, p); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// stageState is a restore's first step: the state's messages and entry
// records go into the restore's tables as stage decodes them, stageRun
// rows a transaction (stager.flush), and are checked: check sees the
// rest, then the checks against the store run, so that a state they
// refuse has no body fetched (they run again in the last step, which
// commits what they change: a local change may come between). A state
// refused, or an error, leaves the store as it was.
func (s *Store) stageState(ctx context.Context, stage func(*stager) (*Snapshot, error), check func(*Restored) error,
	adopt bool) (*stager, *Snapshot, *Restored, error) {
	g := &stager{ctx: ctx, s: s}
	if err := g.begin(); err != nil {
		return nil, nil, nil, err
	}
	sn, info, err := s.stageChecked(ctx, g, stage, check, adopt)
	if err != nil {
		_ = s.dropStaged(ctx, 0) // what it leaves, the next restore or open removes
		return nil, nil, nil, err
	}
	return g, sn, info, nil
}

// stageChecked stages the state and checks it: the checks read the
// staged tables and the store on a read connection, without the store's
// write lock, unless changes are queued (they are taken back first, in a
// savepoint rolled back) or the state is adopted (which clears alarms,
// also rolled back): those run in a write transaction.
func (s *Store) stageChecked(ctx context.Context, g *stager, stage func(*stager) (*Snapshot, error), check func(*Restored) error,
	adopt bool) (*Snapshot, *Restored, error) {
	sn, err := stage(g)
	if err == nil {
		err = g.flush()
	}
	g.msgs, g.ents = nil, nil // not held through the fetches
	if g.failed != nil {
		return nil, nil, g.failed
	}
	if errors.Is(err, ErrSnapshot) {
		return nil, nil, &StateError{Err: err}
	}
	if err != nil {
		return nil, nil, err
	}
	rtx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, fmt.Errorf("checking the state: %w", err)
	}
	defer rtx.Rollback()
	info := &Restored{Head: sn, Messages: int(g.messages), Superseded: int(g.superseded)}
	if err := rtx.QueryRowContext(ctx, "SELECT count(DISTINCT body) FROM restore_messages").Scan(&info.Bodies); err != nil {
		return nil, nil, fmt.Errorf("counting the state's bodies: %w", err)
	}
	if check != nil {
		if err := check(info); err != nil {
			return nil, nil, &StateError{Err: err}
		}
	}
	var queued bool
	if err := rtx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM queue)").Scan(&queued); err != nil {
		return nil, nil, fmt.Errorf("reading the queue: %w", err)
	}
	if queued || adopt {
		err = s.writeTx(ctx, "checking the state", func(tx *sql.Tx) error {
			if err := checkAgainst(ctx, tx, s.parser, g, sn, adopt); err != nil {
				return err
			}
			return errRollBack
		})
		if errors.Is(err, errRollBack) {
			err = nil
		}
	} else {
		err = checkAgainst(ctx, rtx, s.parser, g, sn, adopt)
	}
	if err != nil {
		return nil, nil, err
	}
	// One entry holds one body: a state naming it with two digests is
	// refused, also when the store holds both, since the restore gives
	// the bodies it holds the origins the state names (placeOrigins).
	var twice int64
	err = rtx.QueryRowContext(ctx, `SELECT body FROM restore_messages
		GROUP BY body HAVING min(digest) != max(digest) ORDER BY body LIMIT 1`).Scan(&twice)
	if err == nil {
		return nil, nil, fmt.Errorf("%w: entry %d named with two digests", ErrSnapshot, twice)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("reading the state's bodies: %w", err)
	}
	return sn, info, nil
}

// errRollBack ends a write transaction whose changes are not kept.
var errRollBack = errors.New("rolled back")

// checkAgainst runs checkStaged in tx, for its verdict alone.
func checkAgainst(ctx context.Context, tx *sql.Tx, parser Parser, g *stager, sn *Snapshot, adopt bool) error {
	c, err := checkStaged(ctx, tx, parser, g, sn, adopt)
	if err != nil {
		return err
	}
	return c.byID.Close()
}

// checked is what checkStaged found.
type checked struct {
	r    *restorer
	ov   *overlay
	byID *sql.Stmt // the caller closes it
	look *stagedLookup
	cov  *coverage
	ad   *Adoption
}

// checkStaged checks the staged state against the store, in tx: its
// position, then, the queued changes taken back, that it extends the
// store's history (checkHistory) and UIDVALIDITY counter, and, adopting,
// that it explains the store's alarms (which it clears).
func checkStaged(ctx context.Context, tx *sql.Tx, parser Parser, g *stager, sn *Snapshot, adopt bool) (*checked, error) {
	if err := checkPosition(ctx, tx, sn, adopt); err != nil {
		return nil, err
	}
	r := &restorer{ctx: ctx, tx: tx, parser: parser, sn: sn, adopt: adopt, staged: g}
	var pos, uv int64
	if err := tx.QueryRowContext(ctx, "SELECT position, next_uidvalidity FROM state").Scan(&pos, &uv); err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	// Changes made on this device are taken back first: the checks and
	// the differences below are of the log's state (queue.go), and they
	// are applied again on top of the snapshot's.
	ov := &overlay{ctx: ctx, tx: tx, db: tx}
	var err error
	if ov.rest, err = loadQueue(ctx, tx); err != nil {
		return nil, err
	}
	if len(ov.rest) > 0 {
		if err := ov.takeBack(); err != nil {
			return nil, err
		}
		if err := tx.QueryRowContext(ctx, "SELECT next_uidvalidity FROM state").Scan(&uv); err != nil {
			return nil, fmt.Errorf("reading state: %w", err)
		}
	}
	if err := r.readOldMailboxes(); err != nil {
		return nil, err
	}
	byID, err := tx.PrepareContext(ctx, "SELECT pos, old FROM restore_entries WHERE id = ?")
	if err != nil {
		return nil, fmt.Errorf("reading the staged entries: %w", err)
	}
	c := &checked{r: r, ov: ov, byID: byID, look: &stagedLookup{ctx: ctx, tx: tx, byID: byID, superseded: g.superseded > 0}}
	if c.cov, err = r.checkHistory(uint64(pos), c.look); err != nil {
		byID.Close()
		return nil, err
	}
	if uint64(uv) > uint64(sn.NextUIDValidity) {
		byID.Close()
		return nil, &Contradiction{Pos: sn.Position, Crossed: c.cov.crossed, Detail: fmt.Sprintf(
			"the checkpoint at position %d would give out UIDVALIDITY %d again, which this device has already given out (its next is %d): its writer did not see this device's history",
			sn.Position, sn.NextUIDValidity, uv)}
	}
	c.ad = &Adoption{Crossed: c.cov.crossed, Lost: c.cov.lost}
	if adopt {
		if c.ad.Cleared, err = r.explainAlarms(c.cov.explainFrom); err != nil {
			byID.Close()
			return nil, err
		}
	}
	return c, nil
}

// checkPosition refuses to restore, but to adopt, a state not after the
// store's position.
func checkPosition(ctx context.Context, tx *sql.Tx, sn *Snapshot, adopt bool) error {
	var pos int64
	if err := tx.QueryRowContext(ctx, "SELECT position FROM state").Scan(&pos); err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	if !adopt && uint64(pos) >= sn.Position {
		return fmt.Errorf("%w: checkpoint at %d is not after position %d", ErrPosition, sn.Position, pos)
	}
	return nil
}

// replaceState is a restore's last step: in one transaction, the checks
// of the staged state against the store (the queued changes taken back),
// the changes sessions hear, the copies of messages and entries the
// third step wrote completed (completeCopy) and put in the place of the
// store's, and the queued changes applied again.
func (s *Store) replaceState(ctx context.Context, p *StagedRestore) (*Result, *Adoption, error) {
	g, sn, fresh, fetch, adopt := p.g, p.sn, p.fresh, p.fetch, p.adopt
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("starting restore: %w", err)
	}
	defer tx.Rollback()
	g.ctx, g.tx = ctx, tx
	touched, err := touchedBodies(ctx, tx)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the undo log: %w", err)
	}
	maybeGone, err := takenBackBodies(ctx, tx, touched)
	if err != nil {
		return nil, nil, err
	}
	c, err := checkStaged(ctx, tx, s.parser, g, sn, adopt)
	if err != nil {
		return nil, nil, err
	}
	defer c.byID.Close()
	r, ov, look, cov, ad := c.r, c.ov, c.look, c.cov, c.ad
	r.fresh = fresh
	if ov.takenBack {
		// Taking back the queued changes may have removed bodies the
		// state names (a local APPEND's): fetched here, in this
		// transaction.
		if err := storeTakenBack(ctx, tx, s.parser, fetch, maybeGone); err != nil {
			return nil, nil, err
		}
	}
	added, err := completeCopy(ctx, tx, touched)
	if err != nil {
		return nil, nil, err
	}
	if n := p.built + added; n != g.messages {
		return nil, nil, fmt.Errorf("restoring: %d of %d messages written", n, g.messages)
	}
	if r.shared, err = queryColumn[int64](ctx, tx, "SELECT DISTINCT body FROM messages WHERE body >= ? ORDER BY body", fresh); err != nil {
		return nil, nil, fmt.Errorf("reading the bodies the restore stored: %w", err)
	}
	res, err := r.diff()
	if err != nil {
		return nil, nil, err
	}
	if err := r.replace(cov.crossed); err != nil {
		return nil, nil, err
	}
	upTo := sn.Position
	if cov.crossed {
		upTo = 1<<63 - 1 // every record is of the history the checkpoint supersedes
	}
	if err := forgetAppended(ctx, tx, upTo); err != nil {
		return nil, nil, err
	}
	if ov.takenBack {
		// Queued changes the snapshot holds are in the log: they leave
		// the queue. The others apply again, on top.
		inLog := map[command.ID]bool{}
		for _, q := range ov.rest {
			if _, _, ok, err := look.entry(q.id); err != nil {
				return nil, nil, err
			} else if ok {
				inLog[q.id] = true
			}
		}
		a := &applier{ctx: ctx, tx: tx, parser: s.parser, now: time.Now().UnixMilli(), stmts: map[string]*sql.Stmt{}}
		if err := tx.QueryRowContext(ctx, "SELECT next_uidvalidity FROM state").Scan(&a.nextUV); err != nil {
			return nil, nil, fmt.Errorf("reading state: %w", err)
		}
		if res.Changes, err = ov.reapply(a, sn.Position, inLog, res.Changes); err != nil {
			return nil, nil, err
		}
		// An appended entry of the superseded history that is still
		// queued is not lost: it is applied again and will be sent.
		ad.Lost = slices.DeleteFunc(ad.Lost, func(x Appended) bool {
			return slices.ContainsFunc(ov.rest, func(r queueRow) bool { return r.id == x.ID && !inLog[r.id] })
		})
	}
	c.byID.Close()
	if err := g.end(); err != nil {
		return nil, nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("committing restore to position %d: %w", sn.Position, err)
	}
	s.committed(ctx)
	return res, ad, nil
}

type oldMessage struct {
	mailbox command.ID
	uid     UID
	flags   []string
	digest  [32]byte
}

// restorer is one Restore's transaction and what it read before it. It
// lives for one call: ctx is that call's, the one tx was begun with, kept
// beside tx as database/sql keeps it in a Tx.
type restorer struct {
	ctx    context.Context
	tx     *sql.Tx
	parser Parser
	sn     *Snapshot
	adopt  bool

	staged *stager // Restore and Adopt: the state is in the restore's tables
	fresh  int64   // the first body the restore stored (recount)
	// shared: bodies from fresh on that messages of the store used when
	// the last step began (a local change between the steps), whose
	// references recount counts again.
	shared []int64

	oldMailboxes map[command.ID]oldMailbox
	oldSubs      map[string]bool
	// Covers: the state is held whole, and so are the store's messages.
	oldMessages map[command.ID]oldMessage
}

type oldMailbox struct {
	SnapMailbox
	mid int64
}

// readOldMailboxes reads the store's mailboxes and subscriptions.
func (r *restorer) readOldMailboxes() error {
	r.oldMailboxes = map[command.ID]oldMailbox{}
	r.oldSubs = map[string]bool{}
	err := dumpRows(r.ctx, r.tx, "SELECT mid, id, name, special_use, uidvalidity, uidnext FROM mailboxes", func(sc scanner) error {
		var m oldMailbox
		if err := sc.Scan(&m.mid, &m.ID, &m.Name, &m.SpecialUse, &m.UIDValidity, &m.UIDNext); err != nil {
			return err
		}
		r.oldMailboxes[command.ID(m.ID)] = m
		return nil
	})
	if err != nil {
		return err
	}
	subs, err := queryColumn[string](r.ctx, r.tx, "SELECT name FROM subscriptions")
	if err != nil {
		return err
	}
	for _, n := range subs {
		r.oldSubs[n] = true
	}
	return nil
}

// readOld reads the store's mailboxes and every message (Covers).
func (r *restorer) readOld() error {
	if err := r.readOldMailboxes(); err != nil {
		return err
	}
	r.oldMessages = map[command.ID]oldMessage{}
	mids := map[int64]command.ID{}
	for id, m := range r.oldMailboxes {
		mids[m.mid] = id
	}
	return dumpRows(r.ctx, r.tx, "SELECT m.id, m.mailbox, m.uid, m.flags, m.keywords, b.digest FROM messages m JOIN bodies b ON b.bid = m.body", func(sc scanner) error {
		var idb, digest []byte
		var mid, uid int64
		var f flagSet
		var kw string
		if err := sc.Scan(&idb, &mid, &uid, &f.bits, &kw, &digest); err != nil {
			return err
		}
		var id command.ID
		copy(id[:], idb)
		f.keywords = decodeKeywords(kw)
		m := oldMessage{mailbox: mids[mid], uid: UID(uid), flags: f.list()}
		copy(m.digest[:], digest)
		r.oldMessages[id] = m
		return nil
	})
}

// coverage is what checkHistory found: how the snapshot holds this
// store's history.
type coverage struct {
	crossed     bool       // an entry this store applied (not superseded here already) is among the snapshot's superseded ones
	explainFrom uint64     // the lowest position of an entry applied or appended here that the snapshot supersedes (0: none)
	lost        []Appended // entries appended here that a snapshot superseding this history does not hold
}

// checkHistory refuses a snapshot that does not extend what this store
// knows of the log at its position pos: every entry it applied must be in
// the snapshot's entries, or among the entries of a history a restoration
// superseded, at the same position; every entry this device appended at
// or below the snapshot's position too; and a message it holds under an id
// the snapshot also holds must have the same bytes. Anything else means
// the snapshot's writer was shown another history than this device (a
// fork), or the spool dropped this device's entry. Once the store's
// history is superseded (a restoration replaced it), an appended entry the
// snapshot does not hold is lost with that history (coverage.lost): this
// device never applied it, so no client was told it was done.
func (r *restorer) checkHistory(pos uint64, look historyLookup) (*coverage, error) {
	cp := r.sn.Position
	cov := &coverage{}
	superseded := func(p uint64) {
		if cov.explainFrom == 0 || p < cov.explainFrom {
			cov.explainFrom = p
		}
	}
	var c *Contradiction
	var lacked command.ID // c's entry, while the scan goes on
	err := dumpRows(r.ctx, r.tx, "SELECT id, pos, old FROM entries ORDER BY pos", func(sc scanner) error {
		var idb []byte
		var p, wasOld int64
		if err := sc.Scan(&idb, &p, &wasOld); err != nil {
			return err
		}
		id := command.ID(idb)
		q, isOld, ok, err := look.entry(id)
		if err != nil {
			return err
		}
		if ok && !isOld && q == uint64(p) && wasOld == 0 {
			return nil
		}
		if ok && isOld && q == uint64(p) {
			if wasOld == 0 {
				// history this store applied, superseded now
				cov.crossed = true
				superseded(uint64(p))
				if c != nil {
					return c // found what the scan went on for
				}
			}
			return nil
		}
		if c != nil {
			return nil // an entry after the first it lacks
		}
		if look.anySuperseded() {
			c, lacked = &Contradiction{Pos: uint64(p)}, id
			// The scan goes on to learn whether the state supersedes
			// any of this device's history (Crossed), which makes it
			// say to recover this device too.
			return nil
		}
		held, err := look.at(uint64(p))
		if err != nil {
			return err
		}
		c = &Contradiction{Pos: uint64(p), Detail: fmt.Sprintf(
			"the checkpoint at position %d does not hold entry %s at position %d, where this device (at position %d) applied it, but %s: the spool showed the checkpoint's writer a different history than this device (fork)",
			cp, id, p, pos, held)}
		return c // stops the scan
	})
	var stopped *Contradiction
	if err != nil && !errors.As(err, &stopped) {
		return nil, err
	}
	if c != nil && c.Detail == "" {
		id := lacked
		c.Crossed = cov.crossed
		if c.Crossed {
			c.Detail = fmt.Sprintf(
				"the restoration at position %d neither holds nor supersedes entry %s, which this device applied at position %d: this device holds history the device that wrote the restoration did not have; run cspool recover on this device to put it back",
				cp, id, c.Pos)
		} else {
			c.Detail = fmt.Sprintf(
				"the restoration at position %d supersedes none of the history this device applied, and neither holds nor supersedes entry %s, which this device applied at position %d: it is not a restoration of this device's history (an older one served again after a rollback, or a fork)",
				cp, id, c.Pos)
		}
	}
	if c != nil {
		return nil, c
	}
	appended, err := queryAppended(r.ctx, r.tx, "SELECT id, pos FROM appended ORDER BY pos")
	if err != nil {
		return nil, err
	}
	for _, a := range appended {
		q, isOld, ok, err := look.entry(a.ID)
		if err != nil {
			return nil, err
		}
		if ok && !isOld && q == a.Pos {
			continue
		}
		if ok && isOld && q == a.Pos {
			superseded(a.Pos)
			continue
		}
		switch {
		case cov.crossed:
			cov.lost = append(cov.lost, a)
		case a.Pos <= cp:
			held, err := look.at(a.Pos)
			if err != nil {
				return nil, err
			}
			return nil, &Contradiction{Pos: a.Pos, Detail: fmt.Sprintf(
				"this device appended entry %s and the spool answered that it is at position %d, but the checkpoint at position %d holds %s there: the spool dropped the entry, or showed the checkpoint's writer a different history (fork)",
				a.ID, a.Pos, cp, held)}
		}
	}
	if id, body, ok, err := look.forked(); err != nil {
		return nil, err
	} else if ok {
		return nil, &Contradiction{Pos: body, Crossed: cov.crossed, Detail: fmt.Sprintf(
			"the checkpoint at position %d holds message %x with other bytes than this device holds under that id: the spool showed the checkpoint's writer a different delivery than this device (fork)",
			cp, id)}
	}
	if !cov.crossed && r.sn.Chain != nil {
		// The same history: at the snapshot's position, the same chain.
		var mine []byte
		err := r.tx.QueryRowContext(r.ctx, "SELECT hash FROM chain WHERE pos = ?", int64(cp)).Scan(&mine)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("reading chain hash at %d: %w", cp, err)
		}
		if mine != nil && !bytes.Equal(mine, r.sn.Chain) {
			return nil, &Contradiction{Pos: cp, Detail: fmt.Sprintf(
				"the checkpoint at position %d was written over a history whose chain hash there (%x) is not this device's (%x): the spool showed its writer a different history (fork)",
				cp, r.sn.Chain[:6], mine[:6])}
		}
	}
	return cov, nil
}

// historyLookup is what checkHistory asks of the state: staged
// (stagedLookup) or held whole (mapLookup).
type historyLookup interface {
	// entry returns the position of id in the state's entries, or its
	// superseded ones (old).
	entry(id command.ID) (pos uint64, old, ok bool, err error)
	// at says what the state's entries hold at p, for an alarm.
	at(p uint64) (string, error)
	// anySuperseded reports whether the state has superseded entries.
	anySuperseded() bool
	// forked returns a message of the state that the store holds under
	// the same id with other bytes.
	forked() (id []byte, body uint64, ok bool, err error)
}

// listPositions maps the ids of an encoded entry list to their positions.
func listPositions(list []byte) map[command.ID]uint64 {
	out := make(map[command.ID]uint64, len(list)/24)
	for b := list; len(b) >= 24; b = b[24:] {
		out[command.ID(b[:16])] = binary.BigEndian.Uint64(b[16:24])
	}
	return out
}

// storeBodies is a restore's second step: it stores every body the
// staged state names that the store lacks, asking fetch for them stageRun
// positions at a time in increasing order, and returns the first body it
// stored (one past the last stored when it stored none). Each body stored
// counts as many references as positions it was stored for in its run:
// no message uses it until the last step, whose count of the references
// (recount) reads it only when more than one message does. So the
// restore's last transaction does not carry the bodies' pages (at a
// million, 5 GB of WAL it could not checkpoint). The bodies are checked
// and parsed as they come, without the store's write lock, and written
// bodyGroupBytes at a time, each group a transaction of its own (bodyWriter):
// a local change waits for one group's rows, not for the spool's answers
// or the parsing of a run (at 100,000 messages, 10 to 20 s a run under
// load).
func (s *Store) storeBodies(ctx context.Context, g *stager, fetch BodyFetcher) (int64, error) {
	var fresh int64
	err := s.wdb.QueryRowContext(ctx, "SELECT coalesce(max(bid), 0) + 1 FROM bodies").Scan(&fresh)
	if err != nil {
		return 0, fmt.Errorf("reading the stored bodies: %w", err)
	}
	after := int64(0)
	for {
		done, err := s.bodyRun(ctx, fetch, &after)
		if err != nil || done {
			return fresh, err
		}
	}
}

// bodyGroupBytes is how many bytes of bodies the restore's second step
// holds before it writes them.
const bodyGroupBytes = 1 << 20

// bodyRun stores the missing bodies of the next run of positions after
// *after, and moves *after past them; done when none is missing. Which
// are missing is read without the write lock: a local change between
// the groups may store one of them (put shares it then, as an apply
// would) or remove another body (taking the change back puts it back).
func (s *Store) bodyRun(ctx context.Context, fetch BodyFetcher, after *int64) (done bool, err error) {
	if err := s.check(); err != nil {
		return false, err
	}
	need, want, err := bodiesToFetch(ctx, s.rdb, *after)
	if err != nil || len(need) == 0 {
		return len(need) == 0, err
	}
	w := &bodyWriter{s: s, ctx: ctx}
	fc := fetchCheck{want: want, got: map[uint64]bool{}}
	put := func(pos uint64, raw []byte) error {
		d, err := fc.asked(pos)
		if err != nil {
			return err
		}
		return w.add(pos, raw, d)
	}
	if err := fetch(ctx, need, put); err != nil {
		return false, fmt.Errorf("fetching message bodies: %w", err)
	}
	if err := w.flush(); err != nil {
		return false, err
	}
	if err := fc.complete(need); err != nil {
		return false, err
	}
	*after = int64(need[len(need)-1])
	return false, nil
}

// bodyWriter holds the bodies fetched until bodyGroupBytes of them are
// held; then it checks and parses them on all cores (their SHA-256
// against the digest the checkpoint names, and the parse the apply
// would make, outside the store's write lock), and writes them in one
// transaction under that lock, in the apply's statements of many rows
// (runBodies) instead of four statements a body. The writer's automatic
// checkpoint stays on, unlike in a bulk batch of the log (wal.go): the
// restore's next step reads the bodies' pages again (buildState's join on
// their digests), faster from the database than through the WAL, 38 s
// against 45 s at 100,000 messages (docs/BENCHMARKS.md, "A new device's
// restore on all cores").
type bodyWriter struct {
	s     *Store
	ctx   context.Context
	held  []heldBody
	bytes int
}

type heldBody struct {
	pos  uint64
	raw  []byte
	want [sha256.Size]byte // the digest the checkpoint names
	prep *Prepared
}

func (w *bodyWriter) add(pos uint64, raw []byte, want [sha256.Size]byte) error {
	w.held = append(w.held, heldBody{pos: pos, raw: raw, want: want})
	if w.bytes += len(raw); w.bytes >= bodyGroupBytes {
		return w.flush()
	}
	return nil
}

// prepare checks and parses the bodies held, on all cores; the first
// error in position order is returned.
func (w *bodyWriter) prepare() error {
	errs := make([]error, len(w.held))
	cores.Each(len(w.held), 8, func(from, to int) {
		for i := from; i < to; i++ {
			h := &w.held[i]
			d := sha256.Sum256(h.raw)
			if d != h.want {
				errs[i] = notNamed(h.pos)
				continue
			}
			p, err := parseMessage(w.s.parser, h.raw)
			if err != nil {
				errs[i] = err
				continue
			}
			h.prep = &Prepared{body: h.raw, digest: d, parsed: p}
		}
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (w *bodyWriter) flush() error {
	if len(w.held) == 0 {
		return nil
	}
	if err := w.prepare(); err != nil {
		return err
	}
	err := w.s.writeTx(w.ctx, "storing the restore's bodies", func(tx *sql.Tx) error {
		// On the writer's connection, a large body is written in pieces
		// (blob.go), as an apply writes it.
		a := &applier{ctx: w.ctx, tx: tx, parser: w.s.parser, stmts: map[string]*sql.Stmt{}, conn: w.s.wconn}
		run := make([]runEntry, len(w.held))
		placed := make([]*runEntry, len(w.held))
		for i, h := range w.held {
			run[i] = runEntry{e: Entry{Pos: h.pos, Cmd: &command.Command{Kind: command.Body, Body: h.prep.body}, Prepared: h.prep}, digest: h.prep.digest}
			placed[i] = &run[i]
		}
		return a.runBodies(placed)
	})
	clear(w.held)
	w.held, w.bytes = w.held[:0], 0
	return err
}

// fetchCheck checks the bodies a restore fetches against what the
// checkpoint names (want, position to digest): each position once, and
// only those asked for.
type fetchCheck struct {
	want map[uint64][32]byte
	got  map[uint64]bool
}

// asked takes the body fetched for pos, and returns the digest the
// checkpoint names for it, or refuses it.
func (fc *fetchCheck) asked(pos uint64) ([32]byte, error) {
	d, ok := fc.want[pos]
	if !ok || fc.got[pos] {
		return d, fmt.Errorf("%w: entry %d was not asked for", ErrSnapshot, pos)
	}
	fc.got[pos] = true
	return d, nil
}

// check takes the body fetched for pos, or refuses it.
func (fc *fetchCheck) check(pos uint64, raw []byte) error {
	d, err := fc.asked(pos)
	if err != nil {
		return err
	}
	if sha256.Sum256(raw) != d {
		return notNamed(pos)
	}
	return nil
}

// notNamed is the error for a body fetched for pos whose digest is not
// the one the checkpoint names.
func notNamed(pos uint64) error {
	return fmt.Errorf("%w: entry %d does not hold the bytes the checkpoint names", ErrSnapshot, pos)
}

// complete reports the positions of need whose bodies did not come.
func (fc *fetchCheck) complete(need []uint64) error {
	if len(fc.got) != len(need) {
		return fmt.Errorf("%w: %d of %d bodies could not be fetched", ErrSnapshot, len(need)-len(fc.got), len(need))
	}
	return nil
}

// bodiesToFetch lists the next run of positions after after whose bodies
// the store lacks, with their digests. A body a queued change removed is
// not missing: taking the change back puts it back (undo).
func bodiesToFetch(ctx context.Context, q queryer, after int64) ([]uint64, map[uint64][32]byte, error) {
	want := map[uint64][32]byte{} // position -> digest, for the missing
	var need []uint64
	err := dumpRows(ctx, q, fmt.Sprintf(`SELECT body, min(digest) FROM restore_messages m
		WHERE body > %d AND NOT EXISTS (SELECT 1 FROM bodies b WHERE b.digest = m.digest)
		AND digest NOT IN (SELECT v1 FROM undo WHERE tbl = 'bodies' AND op = 'del')
		GROUP BY body ORDER BY body LIMIT %d`, after, stageRun), func(sc scanner) error {
		var p int64
		var d []byte
		if err := sc.Scan(&p, &d); err != nil {
			return err
		}
		need = append(need, uint64(p))
		want[uint64(p)] = [32]byte(d)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the bodies to fetch: %w", err)
	}
	return need, want, nil
}

// storeTakenBack stores in tx the bodies of the positions in maybeGone
// (position -> digest) that the store lacks once the queued changes are
// taken back (the last step, for the bodies taking them back removed).
func storeTakenBack(ctx context.Context, tx *sql.Tx, parser Parser, fetch BodyFetcher, maybeGone map[uint64][32]byte) error {
	want := map[uint64][32]byte{}
	var need []uint64
	for pos, d := range maybeGone {
		var there bool
		if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM bodies WHERE digest = ?)", d[:]).Scan(&there); err != nil {
			return fmt.Errorf("reading the bodies to fetch: %w", err)
		}
		if !there {
			want[pos] = d
			need = append(need, pos)
		}
	}
	if len(need) == 0 {
		return nil
	}
	slices.Sort(need)
	a := &applier{ctx: ctx, tx: tx, parser: parser, stmts: map[string]*sql.Stmt{}}
	fc := fetchCheck{want: want, got: map[uint64]bool{}}
	put := func(pos uint64, raw []byte) error {
		if err := fc.check(pos, raw); err != nil {
			return err
		}
		a.pos = pos
		_, err := a.storeBody(raw)
		return err
	}
	if err := fetch(ctx, need, put); err != nil {
		return fmt.Errorf("fetching message bodies: %w", err)
	}
	return fc.complete(need)
}

// deleteAll deletes every row of table, stageRun rows (by key) a
// statement.
func deleteAll(ctx context.Context, tx *sql.Tx, table, key string) error {
	q := fmt.Sprintf("DELETE FROM %s WHERE %s IN (SELECT %s FROM %s LIMIT %d)", table, key, key, table, stageRun)
	for {
		res, err := tx.ExecContext(ctx, q)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
	}
}

// replace writes the staged state over the old one: the copies of
// messages and entries the restore built take the place of the store's
// (swapIn), and the mailboxes, subscriptions and keywords are written
// again while no table names the old ones. The messages' copy holds the
// messages in the order of their bodies' positions, the order a new
// device stored the bodies in (so each body's row, for the reference, is
// on the next page) and the order of their UIDs in a mailbox delivered
// to; each mailbox's mid is its place in the state, from 1, as a table
// emptied and written again gives. crossed: the old state was of a
// history the snapshot supersedes, so its chain hashes are of that
// history and go.
func (r *restorer) replace(crossed bool) error {
	ctx, tx := r.ctx, r.tx
	exec := func(q string, args ...any) error {
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("restoring: %w", err)
		}
		return nil
	}
	err := swapIn(ctx, tx, func() error {
		for _, t := range [][2]string{{"mailboxes", "mid"}, {"subscriptions", "name"}, {"keywords", "fold"}} {
			if err := deleteAll(ctx, tx, t[0], t[1]); err != nil {
				return fmt.Errorf("restoring: %w", err)
			}
		}
		for k, mb := range r.sn.Mailboxes {
			err := exec(`INSERT INTO mailboxes (mid, id, name, special_use, uidvalidity, uidnext, highest_modseq)
				VALUES (?, ?, ?, ?, ?, ?, ?)`, k+1, mb.ID, mb.Name, mb.SpecialUse, mb.UIDValidity, mb.UIDNext, int64(mb.ModSeq))
			if err != nil {
				return fmt.Errorf("restoring mailbox %q: %w", mb.Name, err)
			}
		}
		for _, n := range r.sn.Subscriptions {
			if err := exec("INSERT INTO subscriptions (name) VALUES (?)", n); err != nil {
				return err
			}
		}
		for _, k := range r.sn.Keywords {
			if err := exec("INSERT INTO keywords (fold, name) VALUES (?, ?)", foldKeyword(k), k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := recount(ctx, tx, r.fresh, r.shared); err != nil {
		return fmt.Errorf("restoring: %w", err)
	}
	if crossed {
		if err := exec("DELETE FROM chain"); err != nil {
			return err
		}
	}
	if r.sn.Chain != nil {
		if err := exec("INSERT OR REPLACE INTO chain (pos, hash) VALUES (?, ?)", int64(r.sn.Position), r.sn.Chain); err != nil {
			return err
		}
	}
	if r.adopt {
		return exec("UPDATE state SET position = ?, next_uidvalidity = ?, restorations = restorations + 1",
			int64(r.sn.Position), int64(r.sn.NextUIDValidity))
	}
	return exec("UPDATE state SET position = ?, next_uidvalidity = ?", int64(r.sn.Position), int64(r.sn.NextUIDValidity))
}

// errTooMany stops diff's reading of a mailbox's changes.
var errTooMany = errors.New("more changes than listed")

// diff lists, as Changes at the snapshot's position, how the staged state
// differs from the store's (read before replace): mailboxes deleted
// (a new UIDVALIDITY) or renamed, then created, then per mailbox the
// expunged, added and re-flagged messages (each in UID order), or one
// MailboxRestored once the restore's per-message changes would pass
// restoreChangesMax, then deleted mailboxes and subscription changes.
func (r *restorer) diff() (*Result, error) {
	pos := r.sn.Position
	res := &Result{}
	add := func(c Change) {
		c.Pos = pos
		res.Changes = append(res.Changes, c)
	}
	type target struct {
		k      int
		id     command.ID
		name   string
		oldMid int64 // -1: created
	}
	var created, targets []target
	inState := map[command.ID]bool{}
	for k, mb := range r.sn.Mailboxes {
		id := command.ID(mb.ID)
		inState[id] = true
		old, ok := r.oldMailboxes[id]
		switch {
		case !ok:
			created = append(created, target{k, id, mb.Name, -1})
		case old.UIDValidity != mb.UIDValidity:
			add(Change{Kind: MailboxDeleted, Mailbox: id, Name: old.Name})
			created = append(created, target{k, id, mb.Name, -1})
		default:
			targets = append(targets, target{k, id, mb.Name, old.mid})
			if old.Name != mb.Name {
				add(Change{Kind: MailboxRenamed, Mailbox: id, Name: mb.Name, OldName: old.Name})
			}
		}
	}
	for _, t := range created {
		add(Change{Kind: MailboxCreated, Mailbox: t.id, Name: t.name})
	}
	targets = append(targets, created...)
	slices.SortFunc(targets, func(a, b target) int { return a.k - b.k })
	listed := 0
	for _, t := range targets {
		var mine []Change
		more := func(c Change) error {
			if listed+len(mine) >= restoreChangesMax {
				return errTooMany
			}
			c.Mailbox, c.Name, c.Pos = t.id, t.name, pos
			mine = append(mine, c)
			return nil
		}
		err := r.mailboxChanges(t.k, t.oldMid, more)
		if errors.Is(err, errTooMany) {
			add(Change{Kind: MailboxRestored, Mailbox: t.id, Name: t.name})
			continue
		}
		if err != nil {
			return nil, err
		}
		listed += len(mine)
		res.Changes = append(res.Changes, mine...)
	}
	var gone []command.ID
	for id := range r.oldMailboxes {
		if !inState[id] {
			gone = append(gone, id)
		}
	}
	slices.SortFunc(gone, func(a, b command.ID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range gone {
		add(Change{Kind: MailboxDeleted, Mailbox: id, Name: r.oldMailboxes[id].Name})
	}
	newSubs := map[string]bool{}
	for _, n := range r.sn.Subscriptions {
		newSubs[n] = true
		if !r.oldSubs[n] {
			add(Change{Kind: SubscriptionChanged, Name: n, Subscribed: true})
		}
	}
	var unsub []string
	for n := range r.oldSubs {
		if !newSubs[n] {
			unsub = append(unsub, n)
		}
	}
	slices.Sort(unsub)
	for _, n := range unsub {
		add(Change{Kind: SubscriptionChanged, Name: n})
	}
	return res, nil
}

// mailboxChanges hands more the changes of the staged state's mailbox k
// against the store's mailbox oldMid (-1: none): the messages expunged,
// added and re-flagged, each in UID order.
func (r *restorer) mailboxChanges(k int, oldMid int64, more func(Change) error) error {
	query := func(q string, row func(sc scanner) error) error {
		rows, err := r.tx.QueryContext(r.ctx, q, oldMid, k)
		if err != nil {
			return fmt.Errorf("comparing the state: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := row(rows); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("comparing the state: %w", err)
		}
		return nil
	}
	flagsOf := func(bits int64, kw string) []string {
		return flagSet{bits: uint8(bits), keywords: decodeKeywords(kw)}.list()
	}
	err := query(`SELECT o.uid, o.id FROM messages o WHERE o.mailbox = ?1
		AND NOT EXISTS (SELECT 1 FROM restore_messages m WHERE m.mailbox = ?2 AND m.uid = o.uid AND m.id = o.id) ORDER BY o.uid`,
		func(sc scanner) error {
			var uid int64
			var id []byte
			if err := sc.Scan(&uid, &id); err != nil {
				return err
			}
			return more(Change{Kind: MessageExpunged, UID: UID(uid), Message: command.ID(id)})
		})
	if err != nil {
		return err
	}
	err = query(`SELECT m.uid, m.id, m.flags, m.keywords FROM restore_messages m WHERE m.mailbox = ?2
		AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.mailbox = ?1 AND o.uid = m.uid AND o.id = m.id) ORDER BY m.uid`,
		func(sc scanner) error {
			var uid, bits int64
			var id []byte
			var kw string
			if err := sc.Scan(&uid, &id, &bits, &kw); err != nil {
				return err
			}
			return more(Change{Kind: MessageAdded, UID: UID(uid), Message: command.ID(id), Flags: flagsOf(bits, kw)})
		})
	if err != nil || oldMid < 0 {
		return err
	}
	return query(`SELECT m.uid, m.id, m.flags, m.keywords, o.flags, o.keywords FROM restore_messages m
		JOIN messages o ON o.mailbox = ?1 AND o.uid = m.uid AND o.id = m.id
		WHERE m.mailbox = ?2 AND (m.flags != o.flags OR m.keywords != o.keywords) ORDER BY m.uid`,
		func(sc scanner) error {
			var uid, bits, oldBits int64
			var id []byte
			var kw, oldKw string
			if err := sc.Scan(&uid, &id, &bits, &kw, &oldBits, &oldKw); err != nil {
				return err
			}
			flags := flagsOf(bits, kw)
			if equalStrings(flags, flagsOf(oldBits, oldKw)) {
				return nil
			}
			return more(Change{Kind: FlagsChanged, UID: UID(uid), Message: command.ID(id), Flags: flags})
		})
}

// recountRange is how many body rows one statement of recount covers.
const recountRange = 4096

// recount makes every body's reference count the number of messages that
// use it and removes the bodies nobody uses, a range of rows at a time,
// writing only the rows that change. A statement that changes many rows
// keeps the original of every page it writes in memory until it ends (its
// statement journal, in memory with temp_store = memory; the undo
// triggers make SQLite keep one for every statement on bodies): one
// UPDATE of every body's count held a copy of the whole table, about
// 750 bytes a body, 22 MB at 30,000 (docs/MAILSTORE.md, "File and
// durability").
//
// The bodies from fresh on are the ones the restore stored (storeBodies):
// each is used by a message (none is removed), and its count is the
// number of positions it was stored for, at most its messages: only those
// used by more than one message (found in the index messages_body) are
// read, and the ones in shared, which a local change between the
// restore's steps made a message use (and counted), are counted and
// removed as the others are. Reading every row of bodies and blobs, about
// 2.8 KB a message of pages written out to the WAL, took 15 s of a new
// device's restore of 200,000 (docs/BENCHMARKS.md, "A restore that holds
// neither its state nor a statement's journal"). The bodies before fresh
// include any a restore interrupted by a crash stored and no message
// uses: they go here. The same pass gives the bodies before fresh, and
// those in shared, the origins the state names (placeOrigins).
func recount(ctx context.Context, tx *sql.Tx, fresh int64, shared []int64) error {
	var top sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT max(bid) FROM bodies").Scan(&top); err != nil {
		return err
	}
	if fresh <= 0 {
		fresh = top.Int64 + 1 // none
	}
	const count = "(SELECT count(*) FROM messages WHERE body = bid)"
	for lo := int64(0); lo <= top.Int64; {
		hi := lo + recountRange - 1
		qs := []string{
			"DELETE FROM blobs WHERE bid BETWEEN ?1 AND ?2 AND NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)",
			"DELETE FROM bodies WHERE bid BETWEEN ?1 AND ?2 AND NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)",
			"UPDATE bodies SET refs = " + count + " WHERE bid BETWEEN ?1 AND ?2 AND refs != " + count,
			placeOrigins,
		}
		if lo >= fresh {
			qs = []string{"UPDATE bodies SET refs = " + count + ` WHERE bid IN
				(SELECT body FROM messages WHERE body BETWEEN ?1 AND ?2 GROUP BY body HAVING count(*) > 1) AND refs != ` + count}
		} else if hi >= fresh {
			hi = fresh - 1 // the next range starts at fresh
		}
		for _, q := range qs {
			if _, err := tx.ExecContext(ctx, q, lo, hi); err != nil {
				return err
			}
		}
		lo = hi + 1
	}
	for _, bid := range shared {
		if err := collect(ctx, tx, bid, bid); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE bodies SET refs = "+count+" WHERE bid = ? AND refs != "+count, bid); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, placeOrigins, bid, bid); err != nil {
			return err
		}
	}
	return nil
}

// placeOrigins gives each body from ?1 to ?2 that a message of the
// restored state uses the origin the state names for it (the message's
// body position in restore_messages), writing only the rows that change.
// A body the store held before the restore keeps the origin it had
// otherwise, which a restoration may have superseded: the device that
// wrote one, or applied the history it supersedes, holds the bodies it
// put back under their old positions, where the restored log holds other
// entries, and its checkpoints named those (a new device then refused
// them: "entry 4 does not hold the bytes the checkpoint names"). The
// bodies the restore stored took the state's positions as it fetched
// them.
const placeOrigins = `UPDATE bodies SET origin = o.pos FROM
	(SELECT m.body AS bid, min(r.body) AS pos FROM messages m JOIN restore_messages r ON r.id = m.id
		WHERE m.body BETWEEN ?1 AND ?2 GROUP BY m.body) AS o
	WHERE bodies.bid = o.bid AND bodies.origin != o.pos`

// collect removes the bodies from lo to hi that no message uses.
func collect(ctx context.Context, tx *sql.Tx, lo, hi int64) error {
	for _, q := range []string{
		"DELETE FROM blobs WHERE bid BETWEEN ?1 AND ?2 AND NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)",
		"DELETE FROM bodies WHERE bid BETWEEN ?1 AND ?2 AND NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)",
	} {
		if _, err := tx.ExecContext(ctx, q, lo, hi); err != nil {
			return err
		}
	}
	return nil
}

// dropStaged undoes a restore that failed after its first step: the
// restore's tables go, and the bodies from fresh on that no message uses,
// recountRange bodies a transaction. An error here is not the restore's:
// what is left stays for the next restore (recount) or the next open
// (dropLeftStage).
func (s *Store) dropStaged(ctx context.Context, fresh int64) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var top int64
	err := s.wdb.QueryRowContext(ctx, "SELECT coalesce(max(bid), 0) FROM bodies").Scan(&top)
	if fresh <= 0 {
		fresh = top + 1
	}
	for lo := fresh; err == nil && lo <= top; lo += recountRange {
		err = s.tx(ctx, func(tx *sql.Tx) error { return collect(ctx, tx, lo, lo+recountRange-1) })
	}
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error { return dropStageTables(ctx, tx) })
}

// dropLeftStage drops the tables of a restore a crash interrupted, when
// the store is opened; the bodies it stored, which no message uses, go at
// the next restore (recount) or stay in use by it.
func dropLeftStage(ctx context.Context, w *sql.DB) error {
	var n int
	if err := w.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('"+strings.Join(stageNames, "', '")+"')").Scan(&n); err != nil || n == 0 {
		return err
	}
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := dropStageTables(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

// tx runs fn in one write transaction and commits it; the caller holds mu.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.committed(ctx)
	return nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
