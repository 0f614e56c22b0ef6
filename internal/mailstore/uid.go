package mailstore

// UID is a message's UID in its mailbox (RFC 9051 section 2.3.1.1): a
// mailbox's UIDs only grow and are never reused (doc.go).
type UID uint32

// UIDRange is the UIDs from Start to Stop, both included, in either order;
// 0 at either end stands for the largest UID in the mailbox (*, RFC 9051
// section 9, seq-number).
type UIDRange struct {
	Start, Stop UID
}

// UIDSet is the union of its ranges.
type UIDSet []UIDRange
