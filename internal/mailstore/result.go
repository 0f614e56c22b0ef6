package mailstore

import (
	"cspool/internal/command"
)

// Author says who signed an entry.
type Author int

const (
	// AuthorSpool is the delivery side: it may only Deliver.
	AuthorSpool Author = 1
	// AuthorUser is one of the user's devices: it may do everything.
	AuthorUser Author = 2
)

func (a Author) String() string {
	switch a {
	case AuthorSpool:
		return "spool"
	case AuthorUser:
		return "user"
	}
	return "unknown"
}

// Entry is one opened, verified log entry.
type Entry struct {
	Pos    uint64     // log position (dense, increasing)
	ID     command.ID // the entry's unique id
	Author Author
	// Previous: an AuthorSpool entry signed by the spool's previous key
	// (ReplaceSpoolKey), not by the recorded one: it does not make the
	// recorded key used (SpoolSigned).
	Previous bool
	Cmd      *command.Command
	// Prepared, if set, is Store.Prepare(Cmd), made before Apply.
	Prepared *Prepared
}

// Reason says why an entry was rejected. The values are stored.
type Reason string

// Rejection reasons set by Apply. RecordRejected and the unopened entries
// of ApplyChained take any reason.
const (
	ReasonForbidden     Reason = "forbidden"      // the author acts beyond its rights
	ReasonReplay        Reason = "replay"         // the entry id was seen before
	ReasonInvalid       Reason = "invalid"        // no command, or it fails Validate
	ReasonNoMailbox     Reason = "no-mailbox"     // the mailbox to act on does not exist
	ReasonMailboxExists Reason = "mailbox-exists" // the mailbox to create or rename into exists
	ReasonInbox         Reason = "inbox"          // INBOX cannot be deleted
	ReasonIDExists      Reason = "id-exists"      // the id a new message or mailbox would take is in use
	ReasonKept          Reason = "kept"           // inside a rebase: the mailbox holds changes from before the restore
	ReasonDuplicate     Reason = "duplicate"      // a delivery retried: the same bytes as a message delivered shortly before (duplicate.go)
)

// ReasonUnknownVersion is the reason the syncer records for an entry in an
// entry format version the device did not read (entry.ErrUnknownVersion's
// text): one written for a later cspool, which an upgraded device reads.
const ReasonUnknownVersion Reason = "unknown entry format version"

// Status is an entry's outcome.
type Status int

const (
	// Applied: the entry was applied in full.
	Applied Status = iota
	// Partial: applied, but some message ids it names no longer existed and
	// were skipped (Outcome.Skipped), or it left messages its author had
	// not seen so (Outcome.Kept).
	Partial
	// Rejected: nothing was applied (Outcome.Reason).
	Rejected
)

func (s Status) String() string {
	switch s {
	case Applied:
		return "applied"
	case Partial:
		return "partial"
	case Rejected:
		return "rejected"
	}
	return "unknown"
}

// Placement tells where a message created or moved by an entry went: for
// APPENDUID and COPYUID (RFC 4315 section 3).
type Placement struct {
	Source  command.ID // the copied or moved message; zero for Deliver and Append
	ID      command.ID // the message's id
	Mailbox command.ID
	UID     UID
	// UIDValidity is the UIDVALIDITY UID is of: Mailbox's as this
	// device shows it (docs/MAILSTORE.md "Changes made on this device")
	// as the transaction that gave the UID commits, which may differ from
	// what the caller read before (a take-back, a restore's commit
	// meanwhile) and from what the mailbox had when the UID was given (a
	// take-back later in the same transaction: the UIDs stay). For a
	// mailbox gone by then (deleted later in the same batch), the log's
	// UIDVALIDITY it was placed under.
	UIDValidity uint32
}

// Outcome is what became of one entry.
type Outcome struct {
	Pos     uint64
	Entry   command.ID
	Kind    command.Kind // 0 if the entry had no command
	Status  Status
	Reason  Reason       // when Rejected
	Detail  string       // when Rejected: a short explanation, no message content
	Skipped []command.ID // message ids named but no longer present
	Placed  []Placement  // messages created or moved, in order
	// Kept are the messages a command of encoding version 2 left where
	// they were, as its author had not seen them so: an Expunge's that no
	// longer carried its flags, and the messages in a DeleteMailbox's
	// mailbox that it did not name (the mailbox then stays).
	Kept []command.ID
}

// ChangeKind says what a Change is.
type ChangeKind int

const (
	// MessageAdded: UID was added to Mailbox (EXISTS).
	MessageAdded ChangeKind = iota + 1
	// MessageExpunged: UID left Mailbox (EXPUNGE).
	MessageExpunged
	// FlagsChanged: UID's flags are now Flags (FETCH FLAGS).
	FlagsChanged
	// MailboxCreated: Mailbox now exists as Name.
	MailboxCreated
	// MailboxRenamed: Mailbox was OldName and is now Name.
	MailboxRenamed
	// MailboxDeleted: Mailbox (was Name) is gone with its messages; no
	// MessageExpunged changes are listed for them.
	MailboxDeleted
	// SubscriptionChanged: Name is now Subscribed or not.
	SubscriptionChanged
	// MailboxRestored: a restore replaced Mailbox's messages (Name),
	// with more changes than it lists (restoreChangesMax): a session
	// that shows the mailbox compares what it shows with the mailbox's
	// listing from the store.
	MailboxRestored
)

// Change is one state change an IMAP layer must tell its sessions about.
type Change struct {
	Kind       ChangeKind
	Pos        uint64     // the entry that made it
	Mailbox    command.ID // zero for SubscriptionChanged
	UID        UID        // message changes
	Message    command.ID // message changes
	Flags      []string   // FlagsChanged, MessageAdded: the message's flags
	Name       string     // mailbox changes: the (new) name
	OldName    string     // MailboxRenamed
	Subscribed bool       // SubscriptionChanged
}

// Result is what an Apply did.
type Result struct {
	Outcomes []Outcome // one per entry, in order
	Changes  []Change  // in apply order
}

// ByMailbox returns the message and mailbox changes grouped by mailbox, each
// list in apply order (so UIDs added to one mailbox are increasing).
func (r *Result) ByMailbox() map[command.ID][]Change {
	out := map[command.ID][]Change{}
	for _, c := range r.Changes {
		if c.Kind != SubscriptionChanged {
			out[c.Mailbox] = append(out[c.Mailbox], c)
		}
	}
	return out
}

// Rejections counts the rejected entries in r.
func (r *Result) Rejections() int {
	n := 0
	for _, o := range r.Outcomes {
		if o.Status == Rejected {
			n++
		}
	}
	return n
}
