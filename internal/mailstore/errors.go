package mailstore

import "errors"

// Errors returned by the Store. Callers branch with errors.Is.
var (
	// ErrNotMailstore means the database file belongs to another program.
	ErrNotMailstore = errors.New("mailstore: not a cspool mail store database")
	// ErrNewerSchema means the database was written by a newer cspool.
	ErrNewerSchema = errors.New("mailstore: database schema is newer than this program")
	// ErrPosition means Apply was given entries out of log order: a position
	// not after the last applied one, or not increasing.
	ErrPosition = errors.New("mailstore: entry position out of order")
	// ErrNoMailbox means the named mailbox does not exist.
	ErrNoMailbox = errors.New("mailstore: no such mailbox")
	// ErrNoMessage means the message does not exist (any more).
	ErrNoMessage = errors.New("mailstore: no such message")
	// ErrUIDValidity means a read through a Selected found its mailbox
	// with another UIDVALIDITY than the one selected: deleted and created
	// again on this device, its UIDs name other messages (docs/MAILSTORE.md,
	// "Changes made on this device").
	ErrUIDValidity = errors.New("mailstore: the mailbox has another UIDVALIDITY")
	// ErrClosed means the Store was closed.
	ErrClosed = errors.New("mailstore: store is closed")
)
