package mailstore

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Deliveries retried.
//
// An MTA that loses the answer to a delivery it made (the connection
// dropped after the message's last line, the server restarted before it
// answered, the answer came after the MTA's timeout) delivers the message
// again: the spool has committed it by then, so the log holds it twice,
// under two entry ids. Both are the same bytes: the MTA retries its
// queued copy, its own Received field with its queue id and time
// included, and the fields the spool puts in front (Return-Path,
// Delivered-To) are the envelope's. Two different messages are not: even
// the same text sent twice passes the MTA twice, with two queue ids.
//
// So a Deliver whose bytes are those of a message the store holds, in any
// mailbox, with an internal date (the delivery time, for a delivery) at
// most DuplicateWindow before the Deliver's own, is rejected as
// ReasonDuplicate, when the message has a Message-ID field: that excludes
// mail made without an MTA (a script feeding cspool deliver the same
// bytes on purpose). Within a run (apply_deliver.go) the run's own earlier
// deliveries count as held, as applying one by one would make them. The
// rule reads only the store's state, which every device has the same at
// the same position, so every device suppresses the same entries. A retry
// after the first copy was expunged is a message again: nothing of it is
// left to compare with.

// DuplicateWindow is how long after a delivery the same bytes delivered
// again count as its retry: Postfix's default maximal_queue_lifetime, the
// longest an MTA keeps retrying.
const DuplicateWindow = 5 * 24 * time.Hour

// duplicateDetail is a ReasonDuplicate rejection's detail.
var duplicateDetail = fmt.Sprintf("the same bytes, with a Message-ID, as a message delivered in the %d days before: a retried delivery", int(DuplicateWindow/(24*time.Hour)))

// inWindow reports whether a message of internal date held (Unix ms) is
// one a delivery at date may repeat.
func inWindow(held, date int64) bool {
	return held <= date && held >= date-DuplicateWindow.Milliseconds()
}

// bodyDigest is the SHA-256 of b, from its preparation when it has one.
func bodyDigest(prep *Prepared, b []byte) [sha256.Size]byte {
	if p := prep.of(b); p != nil {
		return p.digest
	}
	return sha256.Sum256(b)
}

// duplicateOf returns a ReasonDuplicate rejection if delivering body at
// date repeats a message the store holds (above), nil if not.
func (a *applier) duplicateOf(body []byte, date int64) (*rejection, error) {
	digest := bodyDigest(a.prepared, body)
	var one int
	err := a.QueryRowContext(a.ctx, `SELECT 1 FROM bodies b JOIN messages m ON m.body = b.bid
		WHERE b.digest = ? AND m.date BETWEEN ? AND ? LIMIT 1`,
		digest[:], date-DuplicateWindow.Milliseconds(), date).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking for the message delivered before: %w", err)
	}
	if !hasMessageID(body) {
		return nil, nil
	}
	return &rejection{ReasonDuplicate, duplicateDetail}, nil
}

// runDuplicates rejects the entries of a run not rejected yet that repeat
// a message the store holds or an earlier delivery of the run, as
// duplicateOf would one by one. It sets their digests.
func (a *applier) runDuplicates(rs []runEntry) error {
	var check []*runEntry
	for i := range rs {
		if r := &rs[i]; r.rej == nil {
			r.digest = bodyDigest(r.e.Prepared, r.e.Cmd.Body)
			check = append(check, r)
		}
	}
	held := map[[sha256.Size]byte][]int64{} // the internal dates of the messages of each body
	err := eachChunk(len(check), func(i, j int) error {
		args := make([]any, 0, j-i)
		for _, r := range check[i:j] {
			args = append(args, r.digest[:])
		}
		rows, err := a.QueryContext(a.ctx, heldSQL.rows(j-i), args...)
		if err != nil {
			return fmt.Errorf("looking for messages delivered before: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var digest []byte
			var date int64
			if err := rows.Scan(&digest, &date); err != nil {
				return fmt.Errorf("looking for messages delivered before: %w", err)
			}
			d := [sha256.Size]byte(digest)
			held[d] = append(held[d], date)
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	for _, r := range check {
		dates := held[r.digest]
		repeat := false
		for _, d := range dates {
			repeat = repeat || inWindow(d, r.e.Cmd.Date)
		}
		if repeat && hasMessageID(r.e.Cmd.Body) {
			r.rej = &rejection{ReasonDuplicate, duplicateDetail}
			continue
		}
		// Placed: later deliveries of the run compare with it too.
		held[r.digest] = append(dates, r.e.Cmd.Date)
	}
	return nil
}

// hasMessageID reports whether the header of msg (up to its first empty
// line) holds a Message-ID field.
func hasMessageID(msg []byte) bool {
	const name = "message-id:"
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return false
		}
		if len(line) >= len(name) && bytes.EqualFold(line[:len(name)], []byte(name)) {
			return true
		}
	}
	return false
}
