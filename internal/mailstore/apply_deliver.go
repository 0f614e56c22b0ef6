package mailstore

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"

	"cspool/internal/command"
)

// Deliveries in a run.
//
// A first sync, and most reads of a device that was away, is a run of
// Deliver entries one after the other. Applied one by one, each costs
// about eight statements (its entry id, the message id looked up, the
// body, its forms, its structure, its bytes, INBOX's next UID, the
// message), and each statement a statement journal of the pages it
// changes. applyAll applies a run of two or more consecutive Deliver
// entries with the same statements made for many rows at once, each
// chunk of the run (runChunks) one statement: the entry ids with one
// INSERT OR IGNORE ... RETURNING (the ids it returns are the fresh ones),
// the message ids looked up with one SELECT ... IN, the new bodies, their
// forms, structures and bytes, INBOX's UIDNEXT moved once by the number
// of messages placed, and the messages.
//
// The result is what applying the entries one by one gives, row for row
// (TestDeliverRunAsOneByOne): a Deliver is rejected, if at all, before
// it writes (an entry that does not validate, a replayed id, a message id
// that exists), and which are is known before the run writes anything,
// since within a run only its own entries create messages, each named by
// its entry id, and an id twice in a run is a replay the second time. The
// bodies new to the store are inserted in the order of their first
// delivery, so they get the ids they would have one by one, with as many
// references as the run delivers them; a body stored before the run gains
// those references and, if its origin is unknown, the position of its
// first delivery, as one by one; the messages are inserted in log order
// with consecutive UIDs of INBOX, whose highest modseq becomes the last
// one's position.

// runChunks are the row counts of the statements a run is cut into,
// largest first: the writer keeps three forms of each statement, not one
// for every length of run.
var runChunks = [...]int{64, 8, 1}

// deliverRunLen is how many of entries, from the first, are Deliver
// entries.
func deliverRunLen(entries []Entry) int {
	n := 0
	for n < len(entries) && entries[n].Cmd != nil && entries[n].Cmd.Kind == command.Deliver {
		n++
	}
	return n
}

// eachChunk calls fn with the bounds [i, j) of consecutive chunks of n
// items, cut as runChunks say.
func eachChunk(n int, fn func(i, j int) error) error {
	return eachChunkWithin(n, nil, 0, fn)
}

// runBoundBytes bounds the message bytes one statement of a run binds
// (its blobs) when the chunk runChunks gives would bind more: SQLite
// copies each bound body into the writer's memory, which only grows (a
// connection's SQLite runs in a Wasm memory, docs/MAILSTORE.md), so 64
// messages of 10 KB a statement kept 640 KB of it for the connection's
// life. A chunk is then cut to the next smaller size of runChunks whose
// bodies fit (one body alone always does). At 2 KB a message 64 still
// fit.
const runBoundBytes = 160 << 10

// eachChunkWithin is eachChunk, with the chunks also cut so that the
// sizes of their items (size(i) for item i) add up to at most limit, or
// to one item; a nil size cuts them as runChunks say alone.
func eachChunkWithin(n int, size func(int) int, limit int, fn func(i, j int) error) error {
	for i := 0; i < n; {
		k := 0
		for runChunks[k] > n-i {
			k++
		}
		for size != nil && k < len(runChunks)-1 {
			sum := 0
			for x := i; x < i+runChunks[k]; x++ {
				sum += size(x)
			}
			if sum <= limit {
				break
			}
			k++
		}
		if err := fn(i, i+runChunks[k]); err != nil {
			return err
		}
		i += runChunks[k]
	}
	return nil
}

// manyRows returns head followed by n groups of cols placeholders,
// "(?, ?), (?, ?)", then tail.
func manyRows(head string, cols, n int, tail string) string {
	group := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	var b strings.Builder
	b.WriteString(head)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(group)
	}
	b.WriteString(tail)
	return b.String()
}

// placeholders returns n placeholders, "?, ?, ?".
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// runSQL is a statement of a run, made once for each row count of
// runChunks: made again for every chunk, a first sync's statements were
// 3 MB of garbage, each a few KB of SQL text.
type runSQL struct {
	build   func(n int) string
	byChunk [len(runChunks)]string
}

func newRunSQL(build func(n int) string) *runSQL {
	r := &runSQL{build: build}
	for k, n := range runChunks {
		r.byChunk[k] = build(n)
	}
	return r
}

// rows returns the statement for n rows.
func (r *runSQL) rows(n int) string {
	for k, m := range runChunks {
		if m == n {
			return r.byChunk[k]
		}
	}
	return r.build(n)
}

// The statements of a run (read only once made).
var (
	seenSQL = newRunSQL(func(n int) string {
		return manyRows("INSERT OR IGNORE INTO entries (id, pos) VALUES ", 2, n, " RETURNING id")
	})
	existingSQL = newRunSQL(func(n int) string { return "SELECT id FROM messages WHERE id IN (" + placeholders(n) + ")" })
	bodiesSQL   = newRunSQL(func(n int) string {
		return manyRows("INSERT INTO bodies (digest, refs, size, header_len, parsed, envelope, structure, origin, forms_version) VALUES ",
			9, n, " ON CONFLICT (digest) DO NOTHING RETURNING digest, bid")
	})
	formsSQL      = newRunSQL(func(n int) string { return manyRows("INSERT INTO forms (bid, envelope) VALUES ", 2, n, "") })
	structuresSQL = newRunSQL(func(n int) string { return manyRows("INSERT INTO structures (bid, structure) VALUES ", 2, n, "") })
	blobsSQL      = newRunSQL(func(n int) string { return manyRows("INSERT INTO blobs (bid, data) VALUES ", 2, n, "") })
	messagesSQL   = newRunSQL(func(n int) string {
		return manyRows("INSERT INTO messages (id, mailbox, uid, body, date, size, flags, keywords, modseq) VALUES ", 9, n, "")
	})
	heldSQL = newRunSQL(func(n int) string {
		return `SELECT b.digest, m.date FROM bodies b JOIN messages m ON m.body = b.bid
			WHERE b.digest IN (` + placeholders(n) + ")"
	})
)

// runEntry is one Deliver of a run as applyRun works on it.
type runEntry struct {
	e      Entry
	out    Outcome
	rej    *rejection
	digest [sha256.Size]byte
	parsed parsedMessage
	bid    int64
	uid    UID
}

// deliverRun applies a run of Deliver entries (deliverRunLen), as apply
// would one after the other.
func (a *applier) deliverRun(entries []Entry) ([]Outcome, []Change, error) {
	rs := make([]runEntry, len(entries))
	for i, e := range entries {
		rs[i] = runEntry{e: e, out: Outcome{Pos: e.Pos, Entry: e.ID, Kind: command.Deliver}, rej: a.authorize(e)}
	}
	if err := a.runSeen(rs); err != nil {
		return nil, nil, err
	}
	if a.inbox == nil && slices.ContainsFunc(rs, func(r runEntry) bool { return r.rej == nil }) {
		// As deliver, before it looks the message id up.
		inbox, err := mailboxByID(a.ctx, a, InboxID())
		if err != nil {
			return nil, nil, err
		}
		if inbox == nil {
			return nil, nil, errors.New("INBOX is missing")
		}
		a.inbox = inbox
	}
	if err := a.runExisting(rs); err != nil {
		return nil, nil, err
	}
	if err := a.runDuplicates(rs); err != nil {
		return nil, nil, err
	}
	var placed []*runEntry
	for i := range rs {
		if rs[i].rej == nil {
			placed = append(placed, &rs[i])
		}
	}
	if len(placed) > 0 {
		if err := a.runBodies(placed); err != nil {
			return nil, nil, err
		}
		if err := a.runMessages(placed); err != nil {
			return nil, nil, err
		}
	}
	outs := make([]Outcome, len(rs))
	var changes []Change
	for i := range rs {
		r := &rs[i]
		if r.rej != nil {
			if err := a.recordRejection(&r.out, r.rej); err != nil {
				return nil, nil, err
			}
		} else {
			r.out.Placed = []Placement{{ID: r.e.ID, Mailbox: a.inbox.id, UID: r.uid, UIDValidity: uint32(a.inbox.uidValidity)}}
			changes = append(changes, Change{Kind: MessageAdded, Pos: r.e.Pos, Mailbox: a.inbox.id, UID: r.uid,
				Message: r.e.ID, Flags: flagSet{}.list(), Name: a.inbox.name})
		}
		outs[i] = r.out
	}
	return outs, changes, nil
}

// runSeen records the run's entry ids, as markSeen does each, and rejects
// the entries whose id was seen before, the run's own earlier entries
// included.
func (a *applier) runSeen(rs []runEntry) error {
	fresh := make(map[command.ID]bool, len(rs))
	err := eachChunk(len(rs), func(i, j int) error {
		args := make([]any, 0, 2*(j-i))
		for _, r := range rs[i:j] {
			args = append(args, r.e.ID[:], int64(r.e.Pos))
		}
		rows, err := a.QueryContext(a.ctx, seenSQL.rows(j-i), args...)
		if err != nil {
			return fmt.Errorf("recording entry ids: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id []byte
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("recording entry ids: %w", err)
			}
			fresh[command.ID(id)] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("recording entry ids: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range rs {
		r := &rs[i]
		if fresh[r.e.ID] {
			delete(fresh, r.e.ID) // the id's later entries are replays
			continue
		}
		if r.rej == nil {
			r.rej = a.replayed(r.e)
		}
	}
	return nil
}

// runExisting rejects the entries of the run not rejected yet whose
// message id is a message's already.
func (a *applier) runExisting(rs []runEntry) error {
	var check []*runEntry
	for i := range rs {
		if rs[i].rej == nil {
			check = append(check, &rs[i])
		}
	}
	exists := map[command.ID]bool{}
	err := eachChunk(len(check), func(i, j int) error {
		args := make([]any, 0, j-i)
		for _, r := range check[i:j] {
			args = append(args, r.e.ID[:])
		}
		rows, err := a.QueryContext(a.ctx, existingSQL.rows(j-i), args...)
		if err != nil {
			return fmt.Errorf("reading message ids: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id []byte
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("reading message ids: %w", err)
			}
			exists[command.ID(id)] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading message ids: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range check {
		if exists[r.e.ID] {
			r.rej = &rejection{ReasonIDExists, fmt.Sprintf("message id %s exists", r.e.ID)}
		}
	}
	return nil
}

// runBodies stores the bodies of the entries placed, as storeBody does
// each, and sets their bid; their digests are set (runDuplicates).
func (a *applier) runBodies(placed []*runEntry) error {
	// The distinct bodies in the order of their first delivery, with how
	// many of the run's messages hold each.
	var first []*runEntry
	refs := map[[sha256.Size]byte]int{}
	for _, r := range placed {
		// r.digest is runDuplicates'.
		body := r.e.Cmd.Body
		if prep := r.e.Prepared.of(body); prep != nil {
			r.parsed = prep.parsed
		} else {
			var err error
			if r.parsed, err = parseMessage(a.parser, body); err != nil {
				return err
			}
		}
		if refs[r.digest] == 0 {
			first = append(first, r)
		}
		refs[r.digest]++
	}
	bids := make(map[[sha256.Size]byte]int64, len(first))
	err := eachChunk(len(first), func(i, j int) error {
		args := make([]any, 0, 9*(j-i))
		for _, r := range first[i:j] {
			args = append(args, r.digest[:], refs[r.digest], len(r.e.Cmd.Body), r.parsed.headerLen, r.parsed.status,
				r.parsed.envelope, r.parsed.structure, int64(r.e.Pos), formsVersion(a.parser))
		}
		rows, err := a.QueryContext(a.ctx, bodiesSQL.rows(j-i), args...)
		if err != nil {
			return fmt.Errorf("storing bodies: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var digest []byte
			var bid int64
			if err := rows.Scan(&digest, &bid); err != nil {
				return fmt.Errorf("storing bodies: %w", err)
			}
			bids[[sha256.Size]byte(digest)] = bid
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("storing bodies: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var inserted []*runEntry
	for _, r := range first {
		if _, ok := bids[r.digest]; ok {
			inserted = append(inserted, r)
			continue
		}
		// Stored before the run.
		var bid int64
		if err := a.QueryRowContext(a.ctx, "UPDATE bodies SET refs = refs + ?, origin = iif(origin = 0, ?, origin) WHERE digest = ? RETURNING bid",
			refs[r.digest], int64(r.e.Pos), r.digest[:]).Scan(&bid); err != nil {
			return fmt.Errorf("sharing body: %w", err)
		}
		bids[r.digest] = bid
	}
	for _, r := range placed {
		r.bid = bids[r.digest]
	}
	// The forms and structures are small: the run's chunks. The bytes
	// are cut by what a statement binds (runBoundBytes); a large body
	// alone goes in pieces (blob.go).
	for _, st := range []struct {
		sql  *runSQL
		form func(r *runEntry) any
	}{
		{formsSQL, func(r *runEntry) any { return nullBlob(r.parsed.envelopeWire) }},
		{structuresSQL, func(r *runEntry) any { return nullBlob(r.parsed.structureWire) }},
	} {
		err := eachChunk(len(inserted), func(i, j int) error {
			args := make([]any, 0, 2*(j-i))
			for _, r := range inserted[i:j] {
				args = append(args, r.bid, st.form(r))
			}
			if _, err := a.ExecContext(a.ctx, st.sql.rows(j-i), args...); err != nil {
				return fmt.Errorf("storing bodies: %w", err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return eachChunkWithin(len(inserted), func(i int) int { return len(inserted[i].e.Cmd.Body) }, runBoundBytes, func(i, j int) error {
		if j-i == 1 && len(inserted[i].e.Cmd.Body) > blobPiece {
			if err := insertBlob(a.ctx, a.ExecContext, a.conn, inserted[i].bid, inserted[i].e.Cmd.Body); err != nil {
				return fmt.Errorf("storing bodies: %w", err)
			}
			return nil
		}
		blobs := make([]any, 0, 2*(j-i))
		for _, r := range inserted[i:j] {
			b := r.e.Cmd.Body
			if b == nil {
				b = []byte{}
			}
			blobs = append(blobs, r.bid, b)
		}
		if _, err := a.ExecContext(a.ctx, blobsSQL.rows(j-i), blobs...); err != nil {
			return fmt.Errorf("storing bodies: %w", err)
		}
		return nil
	})
}

// runMessages gives the entries placed consecutive UIDs of INBOX, as
// nextUID does each, and inserts their messages.
func (a *applier) runMessages(placed []*runEntry) error {
	mb := a.inbox
	last := int64(placed[len(placed)-1].e.Pos)
	var uid int64
	err := a.QueryRowContext(a.ctx, "UPDATE mailboxes SET uidnext = uidnext + ?, highest_modseq = ? WHERE mid = ? RETURNING uidnext - ?",
		len(placed), last, mb.mid, len(placed)).Scan(&uid)
	if err != nil {
		return fmt.Errorf("assigning %d uids in %q: %w", len(placed), mb.name, err)
	}
	if uid != mb.uidNext {
		return fmt.Errorf("assigning uids in %q: UIDNEXT %d, %d expected", mb.name, uid, mb.uidNext)
	}
	for i, r := range placed {
		r.uid = UID(uid + int64(i))
	}
	mb.uidNext, mb.modSeq = uid+int64(len(placed)), last
	return eachChunk(len(placed), func(i, j int) error {
		args := make([]any, 0, 9*(j-i))
		for _, r := range placed[i:j] {
			args = append(args, r.e.ID[:], mb.mid, int64(r.uid), r.bid, r.e.Cmd.Date, int64(len(r.e.Cmd.Body)), 0, "", int64(r.e.Pos))
		}
		if _, err := a.ExecContext(a.ctx, messagesSQL.rows(j-i), args...); err != nil {
			return fmt.Errorf("inserting messages: %w", err)
		}
		return nil
	})
}
