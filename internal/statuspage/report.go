package statuspage

import "time"

// ReportVersion is the version of the JSON form of Report. A change that
// removes or redefines a field increments it; new fields do not.
const ReportVersion = 1

// Report is everything the status page shows, and the body of /status.json.
type Report struct {
	Version   int       `json:"version"`
	Generated time.Time `json:"generated"`

	// Alarms are integrity problems the user must look at: a gap in the
	// log, a checkpoint that failed validation, a forked log. Empty when
	// all is well.
	Alarms []string `json:"alarms"`
	// Actions say what a person should do, most urgent first: about the
	// alarms, or an error retrying will not fix, or a spool that does not
	// answer. Empty when nothing needs doing.
	Actions []string `json:"actions"`

	IMAP       IMAPSettings `json:"imap"`
	Page       PageState    `json:"page"`
	Sync       SyncState    `json:"sync"`
	Checkpoint Checkpoint   `json:"checkpoint"`
	Rejected   Rejections   `json:"rejected"`
	Mailboxes  []Mailbox    `json:"mailboxes"`
	// Outbox is the queue of outgoing mail; nil when sending is off
	// (docs/SENDING.md).
	Outbox *Outbox `json:"outbox,omitempty"`
	// Search is the state of the search index; nil when not known.
	Search *SearchIndex `json:"search,omitempty"`
}

// SearchIndex is the state of the device's search index
// (docs/MAILSTORE.md, "Search index").
type SearchIndex struct {
	// Unindexed counts the stored messages the index does not hold yet:
	// the daemon indexes them in the background, and searches read them
	// meanwhile (exact, but slower). 0: the index is complete.
	Unindexed int `json:"unindexed"`
	// Outdated counts the stored messages the index holds texts of that
	// an earlier cspool made: the daemon indexes them again in the
	// background, and searches find in them what those texts hold
	// meanwhile (docs/MAILSTORE.md, "Search texts made by an earlier
	// cspool"). Omitted when 0.
	Outdated int `json:"outdated,omitempty"`
}

// Outbox is the state of the device's queue of outgoing mail.
type Outbox struct {
	Relay    string `json:"relay"`    // the smarthost, as a URL
	Queued   int    `json:"queued"`   // messages with recipients still to relay
	Deferred int    `json:"deferred"` // of those, the ones that failed for now at least once
	// Held of those are not relayed: the outbox was copied or restored
	// from another machine or file (imap-server --release-outbox).
	Held int `json:"held"`
	// Hold names the held messages: --release-outbox=Hold releases them.
	Hold      string    `json:"hold,omitempty"`
	Oldest    time.Time `json:"oldest"`   // submission of the oldest queued (zero: none)
	NextTry   time.Time `json:"next_try"` // the next attempt (zero: none due)
	ToFile    int       `json:"to_file"`  // Sent copies and bounces not yet in the log
	LastError string    `json:"last_error,omitempty"`
	Relayed   int       `json:"relayed"`   // since the daemon started
	Bounced   int       `json:"bounced"`   // bounces filed since the daemon started
	LastSent  time.Time `json:"last_sent"` // zero: nothing relayed since start
}

// IMAPSettings is what a mail client needs. It never holds the password.
type IMAPSettings struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	// PasswordFile is where the password is stored ("" when it was given
	// on the command line).
	PasswordFile string `json:"password_file,omitempty"`
	// EmptyPassword is set when the daemon accepts an empty password.
	EmptyPassword bool `json:"empty_password,omitempty"`
}

// PageState says where the daemon serves its status page, or why it does
// not. Both empty: the page is turned off.
type PageState struct {
	URL string `json:"url,omitempty"` // e.g. http://127.0.0.1:1144/
	// Problem says why the page is not served, e.g. its address was taken
	// by another program when the daemon started.
	Problem string `json:"problem,omitempty"`
}

// The values of SyncState.State.
const (
	StateCurrent = "current" // connected, at the spool's head
	StateBehind  = "behind"  // connected, applying what the spool has, or sending changes queued here
	StateUnknown = "unknown" // no answer from the spool now: how far behind is not known
	StateStopped = "stopped" // an integrity alarm stopped the sync
)

// SyncState is the sync loop's progress against the spool.
type SyncState struct {
	// State sums the rest up: StateCurrent, StateBehind, StateUnknown or
	// StateStopped. Only StateCurrent means up to date.
	State       string    `json:"state"`
	Position    uint64    `json:"position"`     // last applied log position
	Head        uint64    `json:"head"`         // the spool's head, as last seen (never below position)
	Lag         uint64    `json:"lag"`          // head - position, as last seen
	Connected   bool      `json:"connected"`    // the last exchange with the spool succeeded
	LastContact time.Time `json:"last_contact"` // zero: no contact since start
	// SpoolHead is the head the spool gave in its last answer, which may
	// be below Position after a rollback; nil before the first answer.
	SpoolHead *uint64 `json:"spool_head,omitempty"`
	// DownSince is when the exchanges with the spool started failing
	// (zero while connected or before the first attempt failed).
	DownSince time.Time `json:"down_since"`
	LastError string    `json:"last_error,omitempty"`
	Applied   int       `json:"applied"` // entries applied since the daemon started
	// Queued is how many changes made on this device (shown to its IMAP
	// clients already) wait to be sent to the spool, or for the log to
	// take them: they go when the spool answers (docs/IMAP.md, "Offline").
	Queued int    `json:"queued"`
	Spool  string `json:"spool,omitempty"`
	// Readers is the newest entry format every device of the user
	// reads, as the spool last said (absent: not said since the start):
	// from 4 this device writes an EXPUNGE and a DELETE as commands of
	// version 2 (docs/OPERATING.md, "Upgrading").
	Readers int `json:"readers,omitempty"`
	// NeedsFix: the last failure is one retrying will not heal (a key
	// refused, an untrusted certificate, deliveries signed by another
	// key than --spool-key); what to do is in the actions.
	NeedsFix bool `json:"needs_fix,omitempty"`
	// StoreFailing: LastError is this device's database's (a full disk),
	// not the spool's, which answers as Connected says.
	StoreFailing bool `json:"store_failing,omitempty"`
}

// Checkpoint is the state of checkpoints as this device knows it.
type Checkpoint struct {
	Position uint64    `json:"position"` // newest on the spool, as last seen (0: none)
	Written  time.Time `json:"written"`  // when this device last wrote one (zero: not since start)
	Restores int       `json:"restores"` // rebuilds from a checkpoint since start
	// Bad is the position of a checkpoint that failed validation (0: none).
	Bad uint64 `json:"bad,omitempty"`
}

// Rejections are the log entries this device refused to apply.
type Rejections struct {
	Count  int         `json:"count"`  // all recorded, ever
	Recent []Rejection `json:"recent"` // the newest, at most Config.MaxRejected
}

// Rejection is one refused entry.
type Rejection struct {
	Pos    uint64    `json:"pos"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// Mailbox is one folder's counts.
type Mailbox struct {
	Name       string `json:"name"`
	SpecialUse string `json:"special_use,omitempty"`
	Messages   uint32 `json:"messages"`
	Unseen     uint32 `json:"unseen"`
	Size       int64  `json:"size"`
}
