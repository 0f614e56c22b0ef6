package statuspage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cspool/internal/mailstore"
	"cspool/internal/syncer"
)

// Source gives the report the page shows. Collector is the daemon's.
type Source interface {
	Report(ctx context.Context) (*Report, error)
}

// SyncStatus is the part of the sync loop the page reads
// (*syncer.Syncer satisfies it).
type SyncStatus interface {
	Status() syncer.Status
}

// Store is the part of the mail store the page reads
// (*mailstore.Store satisfies it).
type Store interface {
	Mailboxes(ctx context.Context) ([]mailstore.Mailbox, error)
	Rejected(ctx context.Context, limit int) ([]mailstore.Rejection, error)
	RejectedCount(ctx context.Context) (int, error)
	RejectedAs(ctx context.Context, reason mailstore.Reason) (int, error)
}

var (
	_ SyncStatus = (*syncer.Syncer)(nil)
	_ Store      = (*mailstore.Store)(nil)
	_ Source     = (*Collector)(nil)
)

// Collector builds a Report from a running daemon's parts.
type Collector struct {
	Sync  SyncStatus // required
	Store Store      // required
	IMAP  IMAPSettings
	Spool string // the spool server's URL, shown as is
	// Page is where the status page is served, or why not; set it before
	// the first Report.
	Page PageState
	// Alarm, if set, adds an integrity alarm when it returns non-empty
	// text (the same hook imapd.Config.Alert takes).
	Alarm func() string
	// Outbox, if set, reports the queue of outgoing mail (nil, nil when
	// sending is off).
	Outbox func(ctx context.Context) (*Outbox, error)
	// Search, if set, reports the state of the search index.
	Search func(ctx context.Context) (*SearchIndex, error)
	// MaxRejected bounds the rejections listed; 0 = 20.
	MaxRejected int
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// Report implements Source.
func (c *Collector) Report(ctx context.Context) (*Report, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	st := c.Sync.Status()
	r := &Report{
		Version:   ReportVersion,
		Generated: now(),
		Alarms:    Alarms(st),
		IMAP:      c.IMAP,
		Page:      c.Page,
		Sync: SyncState{
			Position: st.Position, Head: max(st.Head, st.Position), Connected: st.Connected,
			LastContact: st.LastContact, DownSince: st.DownSince, LastError: st.LastError, Applied: st.Applied, Queued: st.Queued, Spool: c.Spool,
			Readers:  st.Readers,
			NeedsFix: st.Hint != "", StoreFailing: st.StoreFailing,
		},
		Checkpoint: Checkpoint{
			Position: st.Checkpoint, Written: st.CheckpointWritten, Restores: st.Restores, Bad: st.BadCheckpoint,
		},
		Mailboxes: []Mailbox{},
		Rejected:  Rejections{Recent: []Rejection{}},
	}
	r.Sync.Lag = r.Sync.Head - r.Sync.Position
	if !st.LastContact.IsZero() {
		h := st.SpoolHead
		r.Sync.SpoolHead = &h
	}
	if c.Alarm != nil {
		if a := strings.TrimSpace(c.Alarm()); a != "" {
			r.Alarms = append(r.Alarms, a)
		}
	}
	r.Sync.State, r.Actions = judge(st, r.Sync, len(r.Alarms) > 0)
	if r.Sync.LastError == "" && st.Alarm != "" {
		// The alarm is why nothing is applied: "none" would be a lie.
		r.Sync.LastError = "the integrity alarm above stopped the sync"
	}
	mbs, err := c.Store.Mailboxes(ctx)
	if err != nil {
		return nil, fmt.Errorf("status report: %w", err)
	}
	for _, mb := range mbs {
		r.Mailboxes = append(r.Mailboxes, Mailbox{
			Name: mb.Name, SpecialUse: mb.SpecialUse, Messages: mb.Messages, Unseen: mb.Unseen, Size: mb.Size,
		})
	}
	if r.Rejected.Count, err = c.Store.RejectedCount(ctx); err != nil {
		return nil, fmt.Errorf("status report: %w", err)
	}
	limit := c.MaxRejected
	if limit <= 0 {
		limit = 20
	}
	rej, err := c.Store.Rejected(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("status report: %w", err)
	}
	for _, x := range rej {
		r.Rejected.Recent = append(r.Rejected.Recent, Rejection{Pos: x.Pos, Reason: string(x.Reason), Detail: x.Detail, At: x.At})
	}
	if r.Rejected.Count > 0 {
		n, err := c.Store.RejectedAs(ctx, mailstore.ReasonUnknownVersion)
		if err != nil {
			return nil, fmt.Errorf("status report: %w", err)
		}
		if n > 0 {
			what := fmt.Sprintf("%d entries", n)
			if n == 1 {
				what = "1 entry"
			}
			r.Actions = append(r.Actions, fmt.Sprintf(adviceUnknownVersion, what))
		}
	}
	if c.Outbox != nil {
		if r.Outbox, err = c.Outbox(ctx); err != nil {
			return nil, fmt.Errorf("status report: %w", err)
		}
	}
	if c.Search != nil {
		if r.Search, err = c.Search(ctx); err != nil {
			return nil, fmt.Errorf("status report: %w", err)
		}
	}
	return r, nil
}

// Advice a report gives; the alarm's names the documents a person needs.
const (
	adviceAlarm = "Do not delete this device's database: it holds the history the alarm is about. " +
		"Tell the spool's operator what the alarm says, unless the daemon's --spool-server was just changed: another server's log " +
		"(an empty one says its head is 0) raises this alarm too, so check first that it names the user's own spool server; if it did not, " +
		"point it back, stop the daemon and run cspool sync --clear-alarm, and never cspool recover onto that other server. If they restored the spool from a backup, stop the daemon and " +
		"run cspool recover with its flags (docs/OPERATING.md, \"Restoring a backup\"); otherwise, once it is explained, stop the daemon and run " +
		"cspool sync --clear-alarm with its --db and key flags (docs/SECURITY.md)."
	adviceOtherAlarm = "Tell the spool's operator what the alarm says, and do not delete this device's database."
	// An entry of an entry format this cspool does not read was passed by
	// for good: one a spool switched to a later format before this device
	// was upgraded (docs/OPERATING.md, "Running it").
	adviceUnknownVersion = "This device passed by %s in an entry format it did not read (listed under Rejected, " +
		"\"unknown entry format version\"): mail that it does not show. If this cspool was upgraded since they came, a new " +
		"database shows them: once nothing is queued here, start the daemon with --db naming a new file, and keep the " +
		"old one until the new one shows the mail (docs/OPERATING.md, \"Running it\"); if not, upgrade cspool on this device first."
	adviceStore = "This device's database could not be written (the last error says why; most often a full disk: free some space). " +
		"Nothing is lost: the mail waits in the spool, and the daemon applies it once it can."
	adviceUnreachable = "Nothing yet: the daemon keeps trying by itself, and the mail already here stays readable. " +
		"If it lasts, check this machine's network and ask the spool's operator whether %s is up."
)

// judge sums up the sync state, and says what to do about it. alarmed: the
// report carries an alarm (the syncer's or another).
func judge(st syncer.Status, s SyncState, alarmed bool) (state string, actions []string) {
	actions = []string{}
	switch {
	case st.Alarm != "":
		actions = append(actions, adviceAlarm)
	case alarmed:
		actions = append(actions, adviceOtherAlarm)
	}
	spool := s.Spool
	if spool == "" {
		spool = "the spool server"
	}
	switch {
	case st.Alarm != "" || strings.Contains(st.LastError, syncer.ErrGap.Error()):
		state = StateStopped
	case st.StoreFailing && st.Connected:
		state = StateBehind
		if st.Hint != "" {
			actions = append(actions, st.Hint)
		} else {
			actions = append(actions, adviceStore)
		}
	case !st.Connected:
		state = StateUnknown
		switch {
		case st.Hint != "":
			actions = append(actions, st.Hint)
		case st.LastError != "":
			actions = append(actions, fmt.Sprintf(adviceUnreachable, spool))
		}
	case s.Lag > 0 || s.Queued > 0:
		state = StateBehind
	default:
		state = StateCurrent
	}
	if st.Held != "" {
		// An APPEND the spool refuses for the quota waits until the
		// user deletes mail: the text says so.
		actions = append(actions, st.Held)
	}
	return state, actions
}

// Alarms returns the integrity alarms a sync status carries: the syncer's
// own alarm (a fork, a rollback, a replay, a gap: the sync is stopped),
// entries the spool's key signed beyond its rights (rejected; the sync goes
// on), entries sealed to another key (mail delivered with a wrong key,
// kept; the sync goes on), a checkpoint that failed validation, and a gap reported only as the
// last error. A new kind of alarm in syncer.Status is added here, and shows on
// the page and in `cspool status` without other changes.
func Alarms(st syncer.Status) []string {
	out := []string{}
	if st.Alarm != "" {
		out = append(out, "sync stopped at position "+fmt.Sprint(st.Position)+": "+st.Alarm)
	}
	if st.Misuse != "" {
		out = append(out, st.Misuse)
	}
	if st.Misdelivered != "" {
		out = append(out, st.Misdelivered)
	}
	if st.BadCheckpoint != 0 {
		out = append(out, fmt.Sprintf("the checkpoint at position %d failed validation: this device does not trust it and syncs from the log instead", st.BadCheckpoint))
	}
	if st.Alarm == "" && strings.Contains(st.LastError, syncer.ErrGap.Error()) {
		out = append(out, "the spool's log has a gap that no checkpoint explains; sync is halted at position "+
			fmt.Sprint(st.Position)+": "+st.LastError)
	}
	return out
}
