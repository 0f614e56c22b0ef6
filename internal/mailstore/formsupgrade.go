package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
)

// Forms made by an earlier version of the parser (docs/MAILSTORE.md,
// "Forms made by an earlier cspool"). Every body row keeps the version
// of the derivation that made its header length, status, stored envelope
// and structure and their IMAP forms (bodies.forms_version, schema
// version 30; 0 for a body stored before). UpgradeForms parses the bodies
// of an earlier version again from the bytes the store holds and writes
// what the parser makes of them now, as an apply of those bytes would.
//
// Invariants:
//
//   - Only the parse results change: the body's id, digest, size, origin
//     and references, its bytes, and every message, UID, flag, keyword
//     and modseq stay as they are. The envelope and the body structure
//     are immutable message data (RFC 9051 section 2.3), not metadata
//     whose changes a MODSEQ counts (RFC 7162 section 3.1.1), so no
//     modseq moves; nothing of the replicated state (Dump) changes.
//   - A batch is read and parsed outside any write transaction, on a
//     reader, one body's bytes at a time, and written in one short write
//     transaction: the bodies that were changed meanwhile (deleted, an
//     id taken by other bytes, parsed again) are left out by the write's
//     own test of the id, the digest and the version, and taken again by
//     a later batch if they still need it.
//   - Resumable and idempotent: what is done is what the rows say, so a
//     stop or a crash loses at most the batch under way, and parsing a
//     body again gives the same bytes.
//   - An undo that puts back a body row puts back its version too
//     (the undo triggers take every column of bodies), so a row put back
//     with forms of an earlier version is taken again.

// upgradeBatchBytes bounds the message bytes one batch of UpgradeForms
// reads and parses (one larger body alone always fits): a batch holds
// one message at a time and what the parser made of those before it.
const upgradeBatchBytes = 16 << 20

// FormsVersion is the version of the parser's derivation the store
// stamps new bodies with (Versioned; 0 for a parser without it).
func (s *Store) FormsVersion() int { return formsVersion(s.parser) }

// FormsPending counts the bodies whose stored forms an earlier version
// of the parser made: those UpgradeForms would parse again.
func (s *Store) FormsPending(ctx context.Context) (int, error) {
	v := formsVersion(s.parser)
	if v == 0 {
		return 0, nil
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM bodies WHERE forms_version < ?", v).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the bodies of earlier forms: %w", err)
	}
	return n, nil
}

// redone is a body parsed again by UpgradeForms.
type redone struct {
	bid    int64
	digest []byte
	parsed parsedMessage
}

// UpgradeForms parses again up to limit bodies whose stored forms an
// earlier version of the parser made (lowest version, then lowest id,
// first), at most upgradeBatchBytes of their bytes, and stores what the
// parser makes of them now in one write transaction. It returns how many
// it stored and whether bodies of an earlier version are left.
func (s *Store) UpgradeForms(ctx context.Context, limit int) (done int, more bool, err error) {
	v := formsVersion(s.parser)
	if v == 0 || limit <= 0 {
		return 0, false, nil
	}
	batch, err := s.reparse(ctx, v, limit)
	if err != nil {
		return 0, false, err
	}
	err = s.writeTx(ctx, "storing the forms of bodies parsed again", func(tx *sql.Tx) error {
		if len(batch) > 0 {
			n, err := storeRedone(ctx, tx, v, batch)
			if err != nil {
				return err
			}
			done = n
		}
		return tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM bodies WHERE forms_version < ?)", v).Scan(&more)
	})
	if err != nil {
		return 0, false, err
	}
	return done, more, nil
}

// reparse reads and parses, on a reader with a small cache, the next
// bodies of a version below v, as UpgradeForms bounds them. A body whose
// bytes do not match its digest as read (changed between the two reads)
// is left for a later batch.
func (s *Store) reparse(ctx context.Context, v, limit int) ([]redone, error) {
	type todo struct {
		bid, size int64
		digest    []byte
	}
	var list []todo
	var out []redone
	err := s.readScan(ctx, func(c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, "SELECT bid, digest, size FROM bodies WHERE forms_version < ? ORDER BY forms_version, bid LIMIT ?", v, limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			var t todo
			if err := rows.Scan(&t.bid, &t.digest, &t.size); err != nil {
				rows.Close()
				return err
			}
			list = append(list, t)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		read := int64(0)
		for _, t := range list {
			if len(out) > 0 && read+t.size > upgradeBatchBytes {
				break
			}
			read += t.size
			raw, err := readBody(ctx, c, t.bid, t.size)
			if err != nil {
				return err
			}
			if raw == nil {
				continue // gone since the list was read
			}
			if sum := sha256.Sum256(raw); !bytes.Equal(sum[:], t.digest) {
				continue
			}
			p, err := parseMessage(s.parser, raw)
			if err != nil {
				return fmt.Errorf("body %d: %w", t.bid, err)
			}
			out = append(out, redone{bid: t.bid, digest: t.digest, parsed: p})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parsing bodies of earlier forms again: %w", err)
	}
	return out, nil
}

// readBody reads body bid's bytes on c, in pieces when it is larger than
// blobPiece (blob.go); nil when it is gone.
func readBody(ctx context.Context, c *sql.Conn, bid, size int64) ([]byte, error) {
	if size > blobPiece {
		var n int64
		err := c.QueryRowContext(ctx, "SELECT length(data) FROM blobs WHERE bid = ?", bid).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && n != size) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return readBlob(c, bid, size)
	}
	var raw []byte
	err := c.QueryRowContext(ctx, "SELECT data FROM blobs WHERE bid = ?", bid).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if raw == nil && err == nil {
		raw = []byte{}
	}
	return raw, err
}

// storeRedone writes what the parser made of each body of batch again,
// where the row is still the one parsed (its id, digest and a version
// below v), and returns how many it wrote.
func storeRedone(ctx context.Context, tx *sql.Tx, v int, batch []redone) (int, error) {
	body, err := tx.PrepareContext(ctx, `UPDATE bodies SET header_len = ?, parsed = ?, envelope = ?, structure = ?, forms_version = ?
		WHERE bid = ? AND digest = ? AND forms_version < ?`)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	env, err := tx.PrepareContext(ctx, "INSERT INTO forms (bid, envelope) VALUES (?, ?) ON CONFLICT (bid) DO UPDATE SET envelope = excluded.envelope")
	if err != nil {
		return 0, err
	}
	defer env.Close()
	st, err := tx.PrepareContext(ctx, "INSERT INTO structures (bid, structure) VALUES (?, ?) ON CONFLICT (bid) DO UPDATE SET structure = excluded.structure")
	if err != nil {
		return 0, err
	}
	defer st.Close()
	n := 0
	for _, r := range batch {
		p := r.parsed
		res, err := body.ExecContext(ctx, p.headerLen, p.status, p.envelope, p.structure, v, r.bid, r.digest, v)
		if err != nil {
			return 0, fmt.Errorf("storing body %d parsed again: %w", r.bid, err)
		}
		if k, err := res.RowsAffected(); err != nil || k == 0 {
			continue // changed since it was read
		}
		if _, err := env.ExecContext(ctx, r.bid, nullBlob(p.envelopeWire)); err != nil {
			return 0, fmt.Errorf("storing body %d parsed again: %w", r.bid, err)
		}
		if _, err := st.ExecContext(ctx, r.bid, nullBlob(p.structureWire)); err != nil {
			return 0, fmt.Errorf("storing body %d parsed again: %w", r.bid, err)
		}
		n++
	}
	return n, nil
}
