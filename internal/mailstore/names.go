package mailstore

import (
	"strings"

	"cspool/internal/command"
)

// Delim is the mailbox hierarchy separator.
const Delim = '/'

// InboxName is the one mailbox name matched case-insensitively (RFC 9051
// section 5.1).
const InboxName = "INBOX"

// InitialMailbox describes one of the mailboxes every store starts with.
type InitialMailbox struct {
	ID          command.ID
	Name        string
	SpecialUse  string // RFC 6154 attribute, "" for INBOX
	UIDValidity uint32
}

// InitialMailboxes returns the mailboxes present before any entry, with their
// fixed ids and UIDVALIDITYs (the schema creates exactly these).
func InitialMailboxes() []InitialMailbox {
	return []InitialMailbox{
		{wellKnownID(1), InboxName, "", 1},
		{wellKnownID(2), "Sent", `\Sent`, 2},
		{wellKnownID(3), "Drafts", `\Drafts`, 3},
		{wellKnownID(4), "Trash", `\Trash`, 4},
		{wellKnownID(5), "Junk", `\Junk`, 5},
		{wellKnownID(6), "Archive", `\Archive`, 6},
	}
}

// InboxID returns INBOX's fixed id.
func InboxID() command.ID { return wellKnownID(1) }

func wellKnownID(n byte) command.ID {
	var id command.ID
	id[command.IDSize-1] = n
	return id
}

// NormalizeName spells INBOX (and the first level of its children) in upper
// case, as every name equal to "inbox" ignoring case means INBOX. Other
// names are case-sensitive and returned as given.
func NormalizeName(name string) string {
	const prefix = InboxName + string(Delim)
	switch {
	case strings.EqualFold(name, InboxName):
		return InboxName
	case len(name) > len(prefix) && strings.EqualFold(name[:len(prefix)], prefix):
		return prefix + name[len(prefix):]
	}
	return name
}

// isChild reports whether name is below parent in the hierarchy.
func isChild(name, parent string) bool {
	return len(name) > len(parent)+1 && name[len(parent)] == Delim && strings.HasPrefix(name, parent)
}

// parents returns the names above name, outermost first: "a/b/c" gives
// "a", "a/b".
func parents(name string) []string {
	var out []string
	for i := 0; i < len(name); i++ {
		if name[i] == Delim {
			out = append(out, name[:i])
		}
	}
	return out
}
