package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// queued is one message as an attempt needs it: only its pending
// recipients.
type queued struct {
	qid                  int64
	messageID, sender    string
	utf8                 bool
	bodyType, ret, envid string
	data                 []byte
	accepted             time.Time
	attempts             int
	rcpts                []queuedRcpt
}

type queuedRcpt struct {
	idx            int
	address, orcpt string
	notify         []string
}

// backoff is the wait after the n-th temporary failure in a row.
func (o *Outbox) backoff(n int) time.Duration {
	d := o.cfg.MinBackoff
	for i := 1; i < n && d < o.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, o.cfg.MaxBackoff)
}

func (o *Outbox) relayLoop(ctx context.Context) {
	defer func() {
		// What the messages waited in this run is kept for the next.
		o.saveClock(context.Background(), true)
		if o.idle != nil {
			o.idle.close()
			o.idle = nil
		}
	}()
	for {
		wait := o.relayPass(ctx)
		if ctx.Err() != nil {
			return
		}
		if wait <= 0 {
			continue
		}
		wait = min(wait, maxPassWait)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-o.relayKick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// relayPass sends every message that is due over one connection and
// returns how long to wait before the next pass (0: at once).
func (o *Outbox) relayPass(ctx context.Context) time.Duration {
	now := o.now()
	o.saveClock(ctx, false)
	if err := o.expire(ctx, o.queueClock()); err != nil && ctx.Err() == nil {
		o.log.Error("failing expired messages", "err", err)
	}
	o.mu.Lock()
	hold := o.holdUntil
	o.mu.Unlock()
	if now.Before(hold) {
		return hold.Sub(now)
	}
	due, next, err := o.due(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			o.log.Error("reading the outbox", "err", err)
		}
		return 5 * time.Second
	}
	if len(due) == 0 {
		return o.idleWait(now, next)
	}
	rc, dialErr := o.connect(ctx)
	if err := dialErr; err != nil {
		if ctx.Err() != nil {
			return 0
		}
		o.setError(err)
		// Only what cannot change by itself fails the messages due (a
		// certificate, no TLS, no AUTH offered): a 5xx to the greeting,
		// EHLO or AUTH (a relay password changed at the provider, a
		// provider refusing for a while) is the smarthost's state, not
		// the messages', and the queue waits for it as for an outage.
		var pe *permanentError
		if errors.As(err, &pe) {
			o.log.Error("the smarthost refused the connection for good; failing the messages due", "relay", o.cfg.Relay.String(), "messages", len(due), "err", err)
			for _, qid := range due {
				m, err := o.load(ctx, qid)
				if err == nil {
					err = o.record(ctx, m, failAll(m, dialErr.Error(), dialErr))
				}
				if err != nil {
					o.log.Error("recording a failed message", "queue_id", qid, "err", err)
				}
			}
			return 0
		}
		o.mu.Lock()
		o.connFails++
		wait := o.backoff(o.connFails)
		o.holdUntil = now.Add(wait)
		o.mu.Unlock()
		o.log.Warn("smarthost unreachable; the queue waits", "relay", o.cfg.Relay.String(), "queued", len(due), "retry_in", wait, "err", err)
		return wait
	}
	o.mu.Lock()
	o.connFails = 0
	o.mu.Unlock()
	o.setError(nil)
	for _, qid := range due {
		if ctx.Err() != nil {
			rc.abort()
			return 0
		}
		m, err := o.load(ctx, qid)
		if err != nil {
			o.log.Error("reading a queued message", "queue_id", qid, "err", err)
			continue
		}
		res := rc.send(m)
		if err := o.record(ctx, m, res); err != nil {
			// The smarthost may have it while the outbox does not know:
			// it will be sent again (the duplicate window).
			o.log.Error("recording the smarthost's reply failed", "queue_id", qid, "err", err)
		}
		if res.broken {
			rc.abort()
			return 0
		}
	}
	// Kept open for the next message (the TLS handshake and the login are
	// most of a message's time); closed after idleConn.
	o.idle, o.idleSince = rc, o.now()
	return 0
}

// recordTimeout bounds record's transaction, which a stop does not
// cancel: a synced write of a few rows.
const recordTimeout = 30 * time.Second

// maxPassWait is the longest the relay loop waits between passes while no
// message waits (while one does, Config.ClockSaveEvery).
const maxPassWait = 10 * time.Minute

// queueClock is the queue clock now, in milliseconds: the time the outbox
// has run, summed over every daemon that opened it. It runs on the
// monotonic clock (time.Since on a time.Now reading), which setting the
// device's clock does not move, and stands still while no daemon runs
// (and, on Linux, while the machine sleeps). The give-up limit (MaxAge)
// counts by it: a message submitted while the device's clock was days
// behind, and deferred, was bounced at the first pass after the clock was
// set right, the submission time then lying days in the past; one
// submitted while the clock was ahead was not given up on until the clock
// caught up.
func (o *Outbox) queueClock() int64 {
	return o.clockBase + time.Since(o.opened).Milliseconds()
}

// maxClock bounds the queue clock and a message's queued (either way: the
// upgrade to schema 2 set a waiting message's queued below 0 by its age):
// 2^53 ms is about 285,000 years of running, and far enough from the
// int64 limit that the sums and differences of the give-up limit cannot
// overflow.
const maxClock = 1 << 53

// checkClock holds the queue clock read at open to what it can have been:
// at least every waiting message's queued (a submission raises it so), and
// within [0, maxClock]. A value written around this program (an outbox
// edited, or restored from another's blocks) could otherwise keep its
// messages from ever aging, or, near the int64 limit, overflow the limit's
// arithmetic and give every message up at the first pass. A message whose
// queued is out of range starts its time in the queue again.
func (o *Outbox) checkClock() error {
	clock := o.clockBase
	bad := clock < 0 || clock > maxClock
	if bad {
		clock = 0
	}
	var queued sql.NullInt64
	err := o.db.QueryRow("SELECT max(queued) FROM messages WHERE done = 0 AND queued BETWEEN ? AND ?", -int64(maxClock), int64(maxClock)).Scan(&queued)
	if err != nil {
		return fmt.Errorf("reading the queue clock: %w", err)
	}
	if queued.Valid && queued.Int64 > clock {
		clock, bad = queued.Int64, true
	}
	res, err := o.db.Exec("UPDATE messages SET queued = ? WHERE done = 0 AND (queued < ? OR queued > ?)", clock, -int64(maxClock), int64(maxClock))
	if err != nil {
		return fmt.Errorf("reading the queue clock: %w", err)
	}
	n, _ := res.RowsAffected()
	if !bad && n == 0 {
		return nil
	}
	if _, err := o.db.Exec("UPDATE clock SET ms = ? WHERE id = 1", clock); err != nil {
		return fmt.Errorf("setting the queue clock: %w", err)
	}
	o.log.Error("the outbox's queue clock, or a message's time in it, was not a time it can have run; corrected", "outbox", o.cfg.Path,
		"was_ms", o.clockBase, "now_ms", clock, "messages_restarted", n)
	o.clockBase = clock
	return nil
}

// saveClock writes the queue clock to the database when messages wait and
// it ran Config.ClockSaveEvery since it was last saved (always, with
// force): a daemon stopped without saving it loses that much of the
// messages' age.
func (o *Outbox) saveClock(ctx context.Context, force bool) {
	clock := o.queueClock()
	if !force && time.Duration(clock-o.clockSaved.Load())*time.Millisecond < o.cfg.ClockSaveEvery {
		return
	}
	_, err := o.db.ExecContext(ctx, `UPDATE clock SET ms = ? WHERE id = 1 AND ms < ?
		AND EXISTS (SELECT 1 FROM messages WHERE done = 0)`, clock, clock)
	if err != nil {
		if ctx.Err() == nil {
			o.log.Error("saving the queue clock", "err", err)
		}
		return
	}
	o.clockSaved.Store(clock)
}

// idleConn is how long a connection to the smarthost is kept open with
// nothing to send (servers close theirs after a few minutes: RFC 5321
// section 4.5.3.2.7).
const idleConn = 30 * time.Second

// connect returns the idle connection when it still answers (RSET), else a
// new one.
func (o *Outbox) connect(ctx context.Context) (*relayConn, error) {
	if rc := o.idle; rc != nil {
		o.idle = nil
		if o.now().Sub(o.idleSince) < idleConn && rc.c.Reset() == nil {
			return rc, nil
		}
		rc.abort()
	}
	return o.cfg.Relay.dial(ctx, o.cfg.Hostname)
}

// idleWait closes the idle connection once it has waited idleConn, and
// returns how long the loop may sleep: until the next message is due or
// the idle connection is to be closed.
func (o *Outbox) idleWait(now time.Time, next time.Duration) time.Duration {
	if o.idle == nil {
		return next
	}
	left := idleConn - now.Sub(o.idleSince)
	if left <= 0 {
		o.idle.close()
		o.idle = nil
		return next
	}
	return min(next, left)
}

// failAll is a result failing every pending recipient of m for good.
func failAll(m *queued, reply string, err error) sendResult {
	var res sendResult
	for _, r := range m.rcpts {
		res.rcpts = append(res.rcpts, rcptResult{idx: r.idx, state: rcptFailed, reply: reply, err: err})
	}
	return res
}

// due returns the queue ids due now, in order, or how long until the next
// one is.
func (o *Outbox) due(ctx context.Context, now time.Time) ([]int64, time.Duration, error) {
	// A next try further ahead than the longest backoff was set by a clock
	// that has since gone back (a device whose clock was far ahead, then
	// set right): it is due now, or the message would wait, unsent and
	// never expired, until the clock caught up with it.
	rows, err := o.db.QueryContext(ctx, "SELECT qid FROM messages WHERE done = 0 AND held = 0 AND (next_try <= ? OR next_try > ?) ORDER BY qid LIMIT 200",
		now.UnixMilli(), now.Add(o.cfg.MaxBackoff).UnixMilli())
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var qid int64
		if err := rows.Scan(&qid); err != nil {
			return nil, 0, err
		}
		out = append(out, qid)
	}
	if err := rows.Err(); err != nil || len(out) > 0 {
		return out, 0, err
	}
	var next, queued sql.NullInt64
	if err := o.db.QueryRowContext(ctx, "SELECT min(next_try), min(queued) FROM messages WHERE done = 0 AND held = 0").Scan(&next, &queued); err != nil {
		return nil, 0, err
	}
	if !next.Valid {
		return nil, time.Hour, nil
	}
	// The next pass is when a message is due, or when the oldest is to
	// be given up on, and at least every ClockSaveEvery, which saves the
	// queue clock. Before, the passes came every 10 minutes while the
	// messages waited out an hour's backoff, and a daemon killed sooner
	// after each start (a crash loop) never saved it: its messages never
	// aged, and were never given up on.
	wait := time.UnixMilli(next.Int64).Sub(now)
	expires := time.Duration(queued.Int64-o.queueClock())*time.Millisecond + o.cfg.MaxAge
	return nil, max(min(wait, expires, o.cfg.ClockSaveEvery), time.Millisecond), nil
}

// load reads a queued message with its pending recipients.
func (o *Outbox) load(ctx context.Context, qid int64) (*queued, error) {
	m := &queued{qid: qid}
	var accepted int64
	err := o.db.QueryRowContext(ctx, `SELECT message_id, sender, utf8, body_type, ret, envid, data, accepted, attempts
		FROM messages WHERE qid = ?`, qid).Scan(&m.messageID, &m.sender, &m.utf8, &m.bodyType, &m.ret, &m.envid, &m.data, &accepted, &m.attempts)
	if err != nil {
		return nil, fmt.Errorf("loading message %d: %w", qid, err)
	}
	m.accepted = time.UnixMilli(accepted)
	rows, err := o.db.QueryContext(ctx, "SELECT idx, address, orcpt, notify FROM recipients WHERE qid = ? AND state = ? ORDER BY idx", qid, rcptPending)
	if err != nil {
		return nil, fmt.Errorf("loading message %d: %w", qid, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r queuedRcpt
		var notify string
		if err := rows.Scan(&r.idx, &r.address, &r.orcpt, &notify); err != nil {
			return nil, err
		}
		r.notify = splitNotify(notify)
		m.rcpts = append(m.rcpts, r)
	}
	return m, rows.Err()
}

// record stores the outcome of an attempt in one synced transaction: the
// recipients' states, the message's backoff, the Sent copy to file once
// one recipient has it, and a bounce for the recipients that failed.
//
// A stop (ctx cancelled) does not cut it short: the smarthost has
// answered, and an outbox that does not know it relays the message again
// after the restart. It is bounded by recordTimeout instead.
func (o *Outbox) record(ctx context.Context, m *queued, res sendResult) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	now := o.now()
	byIdx := map[int]queuedRcpt{}
	for _, r := range m.rcpts {
		byIdx[r.idx] = r
	}
	var relayed, temporary int
	var failed []failure
	lastErr := ""
	for _, r := range res.rcpts {
		switch r.state {
		case rcptRelayed:
			relayed++
		case rcptFailed:
			failed = append(failed, failure{rcpt: byIdx[r.idx], reply: r.reply})
			lastErr = r.reply
		default:
			temporary++
			lastErr = r.reply
		}
	}
	inboxBox, inboxFrom := o.mailboxMark(ctx, inboxMailbox)
	var bounce []byte
	var bounceID string
	if notified := notifyFailures(failed); len(notified) > 0 {
		bounce, bounceID = buildDSN(dsnInput{hostname: o.cfg.Hostname, relay: o.cfg.Relay.Addr, m: m, failed: notified, now: now})
	}
	err := inTx(ctx, o.db, func(tx *sql.Tx) error {
		for _, r := range res.rcpts {
			if _, err := tx.ExecContext(ctx, "UPDATE recipients SET state = ?, reply = ?, at = ? WHERE qid = ? AND idx = ?",
				r.state, r.reply, now.UnixMilli(), m.qid, r.idx); err != nil {
				return err
			}
		}
		var pending int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM recipients WHERE qid = ? AND state = ?", m.qid, rcptPending).Scan(&pending); err != nil {
			return err
		}
		attempts := m.attempts + 1
		next := now
		if temporary > 0 {
			next = now.Add(o.backoff(attempts))
		}
		if _, err := tx.ExecContext(ctx, "UPDATE messages SET attempts = ?, next_try = ?, last_error = ?, done = ? WHERE qid = ?",
			attempts, next.UnixMilli(), lastErr, pending == 0, m.qid); err != nil {
			return err
		}
		if relayed > 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO filings (qid, kind, message_id, mailbox, from_uid, created)
				SELECT qid, ?, message_id, sent_box, sent_from, ? FROM messages WHERE qid = ?
				AND NOT EXISTS (SELECT 1 FROM filings WHERE qid = ? AND kind = ?)`,
				fileSent, now.UnixMilli(), m.qid, m.qid, fileSent); err != nil {
				return err
			}
		}
		if bounce != nil {
			if _, err := tx.ExecContext(ctx, `INSERT INTO filings (qid, kind, message_id, mailbox, from_uid, data, created)
				VALUES (?, ?, ?, ?, ?, ?, ?)`, m.qid, fileBounce, bounceID, inboxBox, inboxFrom, bounce, now.UnixMilli()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	o.log.Info("relay attempt", "queue_id", m.qid, "relayed", relayed, "failed", len(failed), "deferred", temporary,
		"attempt", m.attempts+1, "reply", withoutAddresses(lastReply(res)))
	o.mu.Lock()
	if relayed > 0 {
		o.relayed++
		o.lastSent = now
	}
	o.mu.Unlock()
	if relayed > 0 || bounce != nil {
		kick(o.fileKick)
	}
	return nil
}

// withoutAddresses is a smarthost's reply for the log, which names no
// address (docs/SENDING.md): every word holding an @ becomes "<address>".
// Smarthosts quote the recipient they refuse or accept ("550 5.1.1
// <bob@example.org>: Recipient address rejected"); the bounce and the
// outbox keep the reply whole.
func withoutAddresses(reply string) string {
	if !strings.Contains(reply, "@") {
		return reply
	}
	// A quoted local part may hold blanks (<"john doe"@example.org>):
	// it is taken out first, so its @ takes the whole of it. Split at
	// its blanks, the words before the one with the @ went to the log.
	var b strings.Builder
	for i := 0; i < len(reply); i++ {
		if reply[i] == '"' {
			j := i + 1
			for ; j < len(reply) && reply[j] != '"'; j++ {
				if reply[j] == '\\' {
					j++
				}
			}
			if j+1 < len(reply) && reply[j+1] == '@' {
				b.WriteString(`""`)
				i = j
				continue
			}
		}
		b.WriteByte(reply[i])
	}
	words := strings.FieldsFunc(b.String(), func(r rune) bool { return r == ' ' || r == '\t' })
	for i, w := range words {
		if strings.Contains(w, "@") {
			words[i] = "<address>"
		}
	}
	return strings.Join(words, " ")
}

func lastReply(res sendResult) string {
	if n := len(res.rcpts); n > 0 {
		return res.rcpts[n-1].reply
	}
	return ""
}

// expire fails, for good, the pending recipients of messages that have
// waited MaxAge by the queue clock (queueClock).
func (o *Outbox) expire(ctx context.Context, clock int64) error {
	rows, err := o.db.QueryContext(ctx, "SELECT qid, last_error FROM messages WHERE done = 0 AND held = 0 AND queued <= ?", clock-o.cfg.MaxAge.Milliseconds())
	if err != nil {
		return err
	}
	type old struct {
		qid  int64
		last string
	}
	var olds []old
	for rows.Next() {
		var x old
		if err := rows.Scan(&x.qid, &x.last); err != nil {
			rows.Close()
			return err
		}
		olds = append(olds, x)
	}
	rows.Close()
	var errs []error
	for _, x := range olds {
		m, err := o.load(ctx, x.qid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reason := fmt.Sprintf("gave up after %s in the queue", o.cfg.MaxAge)
		if x.last != "" {
			reason += "; the last reply was: " + x.last
		}
		errs = append(errs, o.record(ctx, m, failAll(m, reason, errors.New(reason))))
	}
	return errors.Join(errs...)
}

// purge deletes messages that are done and filed, once older than Keep.
func (o *Outbox) purge(ctx context.Context, now time.Time) error {
	_, err := o.db.ExecContext(ctx, `DELETE FROM messages WHERE done = 1 AND accepted < ?
		AND NOT EXISTS (SELECT 1 FROM filings f WHERE f.qid = messages.qid AND f.done = 0)`, now.Add(-o.cfg.Keep).UnixMilli())
	return err
}
