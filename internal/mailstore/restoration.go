package mailstore

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"cspool/internal/chain"
	"cspool/internal/command"
)

// Restorations: the spool restored from a backup has lost the end of the
// log that devices applied. A device that still holds that history rebases
// it (Rebase): the entries it applied after the restored head are kept as
// superseded (entries.old), the log as the spool now has it is applied
// after them, and the result is a state, with the bodies it needs put back
// on the spool (Body entries), that the device writes as a Restoration
// signed with the user's key. Every other device adopts it (Adopt) once it
// holds everything the device applied: each entry id at its position, as
// applied or as superseded, and each message with the same bytes.
//
// Invariants:
//
//   - Nothing is taken on trust: a snapshot that does not hold an entry
//     this device applied, at its position, is refused as for a checkpoint
//     (checkHistory); one that supersedes what this device applied replaces
//     its chain hashes, which are of the history the restore removed.
//   - Superseded ids stay in entries, so such an entry served again is a
//     replay, whatever its position.
//   - Adopting clears only the integrity alarms the restoration explains:
//     those raised at or after the first position of an entry of this
//     device's that it supersedes. An alarm it does not explain (raised
//     before, or on a history it does not supersede) refuses the adoption
//     and leaves everything as it was.
//   - The position goes back only by adopting (state.restorations counts
//     them, and the schema's trigger allows nothing else).

// Adoption says what adopting a restoration did besides replacing the
// state.
type Adoption struct {
	// Crossed: this device had applied history the restoration supersedes
	// (it was on the far side of the restore).
	Crossed bool
	// Cleared are the integrity alarms the restoration explains, removed.
	Cleared []Alarm
	// Lost are entries this device appended, on the superseded history,
	// that the restoration does not hold: the device never applied them,
	// so no client was told they were done.
	Lost []Appended
}

// Unexplained refuses an adoption that would leave integrity alarms the
// restoration does not explain: nothing was changed.
type Unexplained struct {
	Alarms []Alarm
}

func (u *Unexplained) Error() string {
	return fmt.Sprintf("the restoration does not explain %d integrity alarm(s), the first at position %d: %s",
		len(u.Alarms), u.Alarms[0].Pos, u.Alarms[0].Detail)
}

// Adopt replaces the state with sn, a restoration (or a checkpoint written
// after one), whatever its position relative to the store's: the store's
// history must be in sn, as applied or as superseded entries
// (checkHistory, a *Contradiction otherwise). The integrity alarms sn
// explains are cleared; if any other remains, Adopt returns *Unexplained
// and changes nothing. Bodies are reused or fetched as for Restore.
func (s *Store) Adopt(ctx context.Context, sn *Snapshot, fetch BodyFetcher) (*Result, *Adoption, error) {
	if err := sn.check(); err != nil {
		return nil, nil, err
	}
	res, ad, _, err := s.restore(ctx, stageSnapshot(sn), nil, fetch, true)
	return res, ad, err
}

// AdoptFrom is Adopt of the encoded state read from r, as RestoreFrom is
// Restore's: decoded as it is read, without holding it; check, when not
// nil, sees the state without its messages and entry lists first.
func (s *Store) AdoptFrom(ctx context.Context, r io.Reader, check func(*Restored) error, fetch BodyFetcher) (*Result, *Adoption, *Restored, error) {
	d := &snapDecoder{r: bufio.NewReaderSize(r, 32<<10)}
	return s.restore(ctx, stageDecoded(d), check, fetch, true)
}

// explainAlarms removes the alarms raised at or after from (0: none is
// explained) and returns them, or returns *Unexplained if any other alarm
// is recorded.
func (r *restorer) explainAlarms(from uint64) ([]Alarm, error) {
	rows, err := r.tx.QueryContext(r.ctx, "SELECT at, pos, detail FROM alarms ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("reading alarms: %w", err)
	}
	var cleared, kept []Alarm
	for rows.Next() {
		var a Alarm
		var at, pos int64
		if err := rows.Scan(&at, &pos, &a.Detail); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading alarms: %w", err)
		}
		a.At, a.Pos = time.UnixMilli(at), uint64(pos)
		if from != 0 && a.Pos >= from {
			cleared = append(cleared, a)
		} else {
			kept = append(kept, a)
		}
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("reading alarms: %w", err)
	}
	if len(kept) > 0 {
		return nil, &Unexplained{Alarms: kept}
	}
	if _, err := r.tx.ExecContext(r.ctx, "DELETE FROM alarms"); err != nil {
		return nil, fmt.Errorf("clearing alarms: %w", err)
	}
	return cleared, nil
}

// Restorations returns how many restorations this store adopted.
func (s *Store) Restorations(ctx context.Context) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT restorations FROM state").Scan(&n); err != nil {
		return 0, fmt.Errorf("reading state: %w", err)
	}
	return n, nil
}

// ChainPositions returns the positions at or below upTo at which the store
// recorded the log's chain hash, in increasing order.
func (s *Store) ChainPositions(ctx context.Context, upTo uint64) ([]uint64, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT pos FROM chain WHERE pos <= ? ORDER BY pos", int64(upTo))
	if err != nil {
		return nil, fmt.Errorf("reading chain positions: %w", err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("reading chain positions: %w", err)
		}
		out = append(out, uint64(p))
	}
	return out, rows.Err()
}

// A Rebase computes what the store's state becomes when the history it
// applied after a base position is followed by the log as the spool now
// has it after that position, without changing the store: everything runs
// in one write transaction that Close rolls back. The store's other
// writers wait until Close.
//
// Entries the store applied after base become superseded (still known, so
// never applied again); their bodies, which the spool no longer has, lose
// their origin until an entry holding the same bytes is applied (a Body
// entry put back for them, or a delivery of the same message); the chain
// hashes after base go. Then Apply applies the spool's entries after base,
// as any apply, with two exceptions that keep what the superseded history
// holds: a DeleteMailbox or RenameMailbox naming a mailbox id that does not
// exist does not fall back to the name, and a DeleteMailbox of a mailbox
// the superseded history changed is refused (the mailbox and its messages
// stay).
//
// A Rebase is one transaction, and lives in the context BeginRebase was
// given, as its *sql.Tx does (database/sql rolls the transaction back when
// that context ends): so its methods take no context of their own, and
// keep that one beside the transaction.
type Rebase struct {
	s    *Store
	ctx  context.Context // BeginRebase's, which bounds tx
	tx   *sql.Tx
	base uint64
	pos  uint64

	oldTouched map[command.ID]string // mailboxes the superseded history changed, by id, with their names
	newTouched map[string]bool       // ids (as strings) and names of mailboxes the applied entries changed
	superseded int                   // entries marked superseded
	closed     bool
}

// rebaseRules is what an applier does differently inside a Rebase.
type rebaseRules struct {
	oldTouched map[command.ID]string
}

// BeginRebase starts a Rebase at base, whose chain hash must be baseChain
// when the store recorded one there.
func (s *Store) BeginRebase(ctx context.Context, base uint64, baseChain chain.Hash) (*Rebase, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("starting rebase: %w", err)
	}
	rb := &Rebase{s: s, ctx: ctx, tx: tx, base: base, pos: base,
		oldTouched: map[command.ID]string{}, newTouched: map[string]bool{}}
	if err := rb.begin(baseChain); err != nil {
		rb.Close()
		return nil, err
	}
	return rb, nil
}

func (rb *Rebase) begin(baseChain chain.Hash) error {
	ctx, tx := rb.ctx, rb.tx
	// Changes made on this device and not in the log yet are no part of
	// the history rebased: take them back (in this transaction, which is
	// never committed). They stay queued, and apply again on top when the
	// device adopts the restoration.
	q, err := loadQueue(ctx, tx)
	if err != nil {
		return err
	}
	if len(q) > 0 {
		if err := undoQueued(ctx, tx, q[0].seq); err != nil {
			return err
		}
	}
	var pos int64
	if err := tx.QueryRowContext(ctx, "SELECT position FROM state").Scan(&pos); err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	if uint64(pos) < rb.base {
		return fmt.Errorf("rebase at %d after the store's position %d: %w", rb.base, pos, ErrPosition)
	}
	if rb.base > 0 {
		var h []byte
		err := tx.QueryRowContext(ctx, "SELECT hash FROM chain WHERE pos = ?", int64(rb.base)).Scan(&h)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reading chain hash at %d: %w", rb.base, err)
		}
		if h != nil && string(h) != string(baseChain[:]) {
			return fmt.Errorf("%w: the chain hash at the rebase's base %d is not this store's", ErrPosition, rb.base)
		}
	}
	err = dumpRows(ctx, tx, fmt.Sprintf("SELECT id, name FROM mailboxes WHERE highest_modseq > %d", rb.base), func(sc scanner) error {
		var id []byte
		var name string
		if err := sc.Scan(&id, &name); err != nil {
			return err
		}
		rb.oldTouched[command.ID(id)] = name
		return nil
	})
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, "UPDATE entries SET old = 1 WHERE pos > ? AND old = 0", int64(rb.base))
	if err != nil {
		return fmt.Errorf("starting rebase: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("starting rebase: %w", err)
	}
	rb.superseded = int(n)
	for _, q := range []string{
		"UPDATE bodies SET origin = 0 WHERE origin > ?",
		"DELETE FROM chain WHERE pos > ?",
		"DELETE FROM appended WHERE pos > ?",
	} {
		if _, err := tx.ExecContext(ctx, q, int64(rb.base)); err != nil {
			return fmt.Errorf("starting rebase: %w", err)
		}
	}
	_, err = tx.ExecContext(ctx, "UPDATE state SET position = ?, restorations = restorations + 1", int64(rb.base))
	if err != nil {
		return fmt.Errorf("starting rebase: %w", err)
	}
	return nil
}

// Superseded is the number of entries the store applied after the base,
// now superseded.
func (rb *Rebase) Superseded() int { return rb.superseded }

// Position is the position the rebase has applied up to.
func (rb *Rebase) Position() uint64 { return rb.pos }

// Apply applies entries after the rebase's position, with the chain hash
// at every position up to newPos (as for ApplyChained).
func (rb *Rebase) Apply(entries []Entry, newPos uint64, chain []chain.Hash) (*Result, error) {
	if rb.closed {
		return nil, ErrClosed
	}
	ctx, tx := rb.ctx, rb.tx
	last, err := ascending(entries, rb.pos)
	if err != nil {
		return nil, err
	}
	if newPos < last || uint64(len(chain)) != newPos-rb.pos {
		return nil, fmt.Errorf("rebase to %d with %d chain hashes from %d: %w", newPos, len(chain), rb.pos, ErrPosition)
	}
	a := &applier{ctx: ctx, tx: tx, parser: rb.s.parser, now: time.Now().UnixMilli(), stmts: map[string]*sql.Stmt{},
		rebase: &rebaseRules{oldTouched: rb.oldTouched}}
	res, err := a.applyAll(entries)
	if err != nil {
		return nil, err
	}
	for _, c := range res.Changes {
		if !c.Mailbox.IsZero() {
			rb.newTouched[string(c.Mailbox[:])] = true
		}
		for _, n := range []string{c.Name, c.OldName} {
			if n != "" {
				rb.newTouched[n] = true
			}
		}
	}
	for i, h := range chain {
		if _, err := tx.ExecContext(ctx, "INSERT INTO chain (pos, hash) VALUES (?, ?)", int64(rb.pos)+1+int64(i), h[:]); err != nil {
			return nil, fmt.Errorf("recording chain hash: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE state SET position = ?, next_uidvalidity = ?", int64(newPos), a.nextUV); err != nil {
		return nil, fmt.Errorf("recording position %d: %w", newPos, err)
	}
	rb.pos = newPos
	return res, nil
}

// MissingDigests returns, in order, the SHA-256 of every live body whose
// bytes no entry the rebase applied (or that stayed below its base) holds:
// a Body entry must put each back.
func (rb *Rebase) MissingDigests() ([][32]byte, error) {
	if rb.closed {
		return nil, ErrClosed
	}
	var out [][32]byte
	err := dumpRows(rb.ctx, rb.tx, "SELECT digest FROM bodies WHERE origin = 0 ORDER BY digest", func(sc scanner) error {
		var d []byte
		if err := sc.Scan(&d); err != nil {
			return err
		}
		out = append(out, [32]byte(d))
		return nil
	})
	return out, err
}

// Body returns the bytes of the stored body with this digest.
func (rb *Rebase) Body(digest [32]byte) ([]byte, error) {
	if rb.closed {
		return nil, ErrClosed
	}
	var raw []byte
	err := rb.tx.QueryRowContext(rb.ctx, "SELECT l.data FROM bodies b JOIN blobs l ON l.bid = b.bid WHERE b.digest = ?", digest[:]).Scan(&raw)
	if err != nil {
		return nil, fmt.Errorf("reading body %x: %w", digest[:6], err)
	}
	return raw, nil
}

// Snapshot returns the state the rebase has reached, at its position: the
// Snapshot a Restoration carries. A mailbox that both the superseded
// history and the entries applied since changed (by id, or by name) gets a
// new UIDVALIDITY, so that no device's mail client sees one UID name two
// messages: the superseded history and the spool's gave out the same UIDs
// there. The new UIDVALIDITYs come after every one either history gave out.
// The store's transaction is not changed.
func (rb *Rebase) Snapshot() (*Snapshot, []string, error) {
	if rb.closed {
		return nil, nil, ErrClosed
	}
	ctx, tx := rb.ctx, rb.tx
	if _, err := tx.ExecContext(ctx, "SAVEPOINT snapshot"); err != nil {
		return nil, nil, fmt.Errorf("savepoint: %w", err)
	}
	defer func() {
		tx.ExecContext(ctx, "ROLLBACK TO snapshot")
		tx.ExecContext(ctx, "RELEASE snapshot")
	}()
	renewed, err := rb.renewUIDValidity()
	if err != nil {
		return nil, nil, err
	}
	sn, err := snapshotOf(ctx, tx)
	if err != nil {
		return nil, nil, err
	}
	if len(sn.Chain) != sha256.Size {
		return nil, nil, fmt.Errorf("%w: no chain hash at the rebase's position %d", ErrSnapshot, rb.pos)
	}
	for _, m := range sn.Messages {
		if m.Body == 0 {
			return nil, nil, fmt.Errorf("message %x: %w (its bytes were not put back)", m.ID, ErrNoOrigin)
		}
	}
	return sn, renewed, nil
}

// WriteSnapshot is Snapshot for a writer, as Store.WriteSnapshot is: the
// same state (UIDVALIDITYs renewed in a savepoint rolled back after),
// encoded from the rows into what use is handed, with the names of the
// mailboxes renewed, without holding it.
func (rb *Rebase) WriteSnapshot(use func(info SnapshotInfo, renewed []string, encode func(io.Writer) error) error) error {
	if rb.closed {
		return ErrClosed
	}
	ctx, tx := rb.ctx, rb.tx
	if _, err := tx.ExecContext(ctx, "SAVEPOINT snapshot"); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	defer func() {
		tx.ExecContext(ctx, "ROLLBACK TO snapshot")
		tx.ExecContext(ctx, "RELEASE snapshot")
	}()
	renewed, err := rb.renewUIDValidity()
	if err != nil {
		return err
	}
	var chain []byte
	if err := tx.QueryRowContext(ctx, "SELECT c.hash FROM state s JOIN chain c ON c.pos = s.position").Scan(&chain); err != nil || len(chain) != sha256.Size {
		return fmt.Errorf("%w: no chain hash at the rebase's position %d", ErrSnapshot, rb.pos)
	}
	return writeSnapshot(sqlSource{ctx, tx}, func(info SnapshotInfo, encode func(io.Writer) error) error {
		return use(info, renewed, encode)
	})
}

// renewUIDValidity gives the mailboxes changed on both sides a new
// UIDVALIDITY, in id order, and returns their names.
func (rb *Rebase) renewUIDValidity() ([]string, error) {
	ctx, tx := rb.ctx, rb.tx
	type mb struct {
		mid  int64
		id   command.ID
		name string
	}
	var all []mb
	err := dumpRows(ctx, tx, "SELECT mid, id, name FROM mailboxes ORDER BY id", func(sc scanner) error {
		var m mb
		var id []byte
		if err := sc.Scan(&m.mid, &id, &m.name); err != nil {
			return err
		}
		m.id = command.ID(id)
		all = append(all, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	oldNames := map[string]bool{}
	for _, n := range rb.oldTouched {
		oldNames[n] = true
	}
	var uv int64
	if err := tx.QueryRowContext(ctx, "SELECT next_uidvalidity FROM state").Scan(&uv); err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	var renewed []string
	for _, m := range all {
		_, oldID := rb.oldTouched[m.id]
		before := oldID || oldNames[m.name]
		after := rb.newTouched[string(m.id[:])] || rb.newTouched[m.name]
		if !before || !after {
			continue
		}
		if uv > maxUIDValidity {
			return nil, fmt.Errorf("renewing %q: UIDVALIDITY space exhausted", m.name)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE mailboxes SET uidvalidity = ? WHERE mid = ?", uv, m.mid); err != nil {
			return nil, fmt.Errorf("renewing UIDVALIDITY of %q: %w", m.name, err)
		}
		uv++
		renewed = append(renewed, m.name)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE state SET next_uidvalidity = ?", uv); err != nil {
		return nil, fmt.Errorf("renewing UIDVALIDITY: %w", err)
	}
	sort.Strings(renewed)
	return renewed, nil
}

// Close ends the rebase and leaves the store as it was.
func (rb *Rebase) Close() error {
	if rb.closed {
		return nil
	}
	rb.closed = true
	defer rb.s.mu.Unlock()
	if err := rb.tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("ending rebase: %w", err)
	}
	return nil
}

// keeps reports whether a rebase keeps mailbox mb from being deleted: the
// superseded history changed it.
func (r *rebaseRules) keeps(mb *mailboxRow) bool {
	_, ok := r.oldTouched[mb.id]
	return ok
}

// Covers reports, without changing anything, whether sn holds this
// store's history as Adopt requires: nil if so, else the
// *Contradiction Adopt would return.
func (s *Store) Covers(ctx context.Context, sn *Snapshot) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := sn.check(); err != nil {
		return err
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("reading history: %w", err)
	}
	defer tx.Rollback()
	var pos int64
	if err := tx.QueryRowContext(ctx, "SELECT position FROM state").Scan(&pos); err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	r := &restorer{ctx: ctx, tx: tx, parser: s.parser, sn: sn, adopt: true}
	if err := r.readOld(); err != nil {
		return err
	}
	_, err = r.checkHistory(uint64(pos), newMapLookup(sn, r.oldMessages))
	return err
}

// Lacks returns the entries of an encoded entry list (Snapshot.Entries,
// Snapshot.Superseded) that this store has not applied, or not at the
// same position: the history of another device's state that this one does
// not hold.
func (s *Store) Lacks(ctx context.Context, list []byte) ([]Appended, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	mine := map[command.ID]uint64{}
	err := dumpRows(ctx, s.rdb, "SELECT id, pos FROM entries", func(sc scanner) error {
		var id []byte
		var p int64
		if err := sc.Scan(&id, &p); err != nil {
			return err
		}
		mine[command.ID(id)] = uint64(p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Appended
	for id, p := range listPositions(list) {
		if q, ok := mine[id]; !ok || q != p {
			out = append(out, Appended{ID: id, Pos: p})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pos < out[j].Pos })
	return out, nil
}
