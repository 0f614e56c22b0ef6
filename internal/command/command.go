// Package command defines the commands that make up a user's log, the state
// machine vocabulary every device applies in log order, and their encoding.
//
// Implementation notes:
//
//   - Encoding (version 1): one CBOR data item (RFC 8949), a 3-element array
//     [version, kind, fields], in the core deterministic encoding of RFC 8949
//     section 4.2.1 (shortest integers, sorted map keys, definite lengths, no
//     tags), immediately followed by the body: the raw message bytes for
//     Deliver and Append, nothing for every other kind. Keeping the message out
//     of the CBOR item lets a 50 MB message be decoded without copying it.
//   - Exactly one encoding is accepted: Decode re-encodes the fields and
//     refuses input whose CBOR item differs (non-canonical integers, unsorted or
//     duplicate keys, unknown fields, fields a kind does not use).
//   - Messages and mailboxes are named by IDs, not by Message-ID headers or
//     names alone: a message created by an entry (Deliver, Append) takes the
//     entry's id; the i-th copy made by a Copy entry takes DeriveID(entry, i).
//     Mailbox commands carry both the mailbox's stable ID (when it has one) and
//     its name, so that a command racing with a RENAME still finds its mailbox.
//   - Decode never panics, whatever the input (fuzzed).
//
// docs/FORMAT.md is the normative description.
package command

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Version is the command encoding version written for every command but
// those that ask for Version2.
const Version = 1

// Version2 is the encoding version of the commands whose apply rule waits
// for what their author saw (docs/FORMAT.md §3, "Version 2"): an Expunge
// that names the flags each message must still carry and the mailbox it
// must still be in, a DeleteMailbox
// that names the messages it may take. Only those two kinds are written
// in it; an entry holding one is in entry format 4, which devices built
// before it do not read, so that no device applies such a command by the
// rule of version 1.
const Version2 = 2

// DefaultMaxMessageBytes is the largest message a Deliver or Append carries
// when nothing else is configured: the spool's default for deliveries
// (LMTP, cspool deliver) and a device's for IMAP APPEND, so that what one
// side takes the other does too.
const DefaultMaxMessageBytes = 50 << 20

// Kind says what a command does.
type Kind uint8

// The command kinds. Values are part of the encoding: never renumber.
const (
	Deliver       Kind = 1  // a message delivered by the spool into INBOX
	Append        Kind = 2  // a message added by the user to a mailbox
	SetFlags      Kind = 3  // add flags to messages
	ClearFlags    Kind = 4  // remove flags from messages
	ReplaceFlags  Kind = 5  // set messages' flags to exactly Flags
	Copy          Kind = 6  // copy messages into a mailbox
	Move          Kind = 7  // move messages into a mailbox
	Expunge       Kind = 8  // remove messages for good
	CreateMailbox Kind = 9  // create a mailbox
	RenameMailbox Kind = 10 // rename a mailbox (and its children)
	DeleteMailbox Kind = 11 // delete a mailbox and its messages
	Subscribe     Kind = 12 // add a mailbox to the subscription list
	Unsubscribe   Kind = 13 // remove a mailbox from the subscription list
	Checkpoint    Kind = 14 // marks a checkpoint of the state at Position
	Body          Kind = 15 // a message's bytes, put back by a recovery after a restore
	Restoration   Kind = 16 // the state after a restore, replacing the history after Base
	maxKind            = Restoration
)

var kindNames = [...]string{
	Deliver: "Deliver", Append: "Append", SetFlags: "SetFlags", ClearFlags: "ClearFlags",
	ReplaceFlags: "ReplaceFlags", Copy: "Copy", Move: "Move", Expunge: "Expunge",
	CreateMailbox: "CreateMailbox", RenameMailbox: "RenameMailbox", DeleteMailbox: "DeleteMailbox",
	Subscribe: "Subscribe", Unsubscribe: "Unsubscribe", Checkpoint: "Checkpoint",
	Body: "Body", Restoration: "Restoration",
}

// HoldsContent reports whether a command of kind k carries a message or a
// mailbox's state (Deliver, Append, Checkpoint, Body, Restoration): the
// entries whose size follows their content. Every other kind is a change
// to messages or mailboxes already there, small whatever the mailbox.
func (k Kind) HoldsContent() bool {
	switch k {
	case Deliver, Append, Checkpoint, Body, Restoration:
		return true
	}
	return false
}

func (k Kind) String() string {
	if k >= 1 && k <= maxKind {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// IDSize is the size of message, mailbox and entry ids.
const IDSize = 16

// ID names a message, a mailbox or an entry.
type ID [IDSize]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros.
func (id ID) IsZero() bool { return id == ID{} }

// DeriveID returns the id of the i-th message created by entry (a Copy): the
// first 16 bytes of SHA-256("cspool/v1 copy" || entry || uint32be(i)).
func DeriveID(entry ID, i uint32) ID {
	h := sha256.New()
	h.Write([]byte("cspool/v1 copy"))
	h.Write(entry[:])
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], i)
	h.Write(b[:])
	var id ID
	copy(id[:], h.Sum(nil))
	return id
}

// Head is a log position and the tree hash the author had applied when it
// wrote a command (tamper evidence; optional).
type Head struct {
	Pos  uint64
	Hash []byte
}

// Command is one state change. Which fields a kind uses is fixed (see
// fieldsOf); the others must be zero.
type Command struct {
	Kind Kind
	// Version is the encoding version: 0 for Version (1), or Version2.
	Version uint8

	// Mailbox is the target mailbox's name: for Append, Copy and Move the
	// destination; for CreateMailbox, DeleteMailbox, (Un)Subscribe the mailbox;
	// for RenameMailbox the old name.
	Mailbox string
	// MailboxID is the target mailbox's stable id, when the author knew it;
	// for an Expunge of version 2, the mailbox each message must still be
	// in.
	MailboxID ID
	// NewName is RenameMailbox's new name.
	NewName string
	// SpecialUse is CreateMailbox's RFC 6154 attribute, e.g. `\Sent`.
	SpecialUse string
	// Flags are system flags (`\Seen`...) and keywords. For an Expunge
	// of version 2, the flags each message must carry to be removed.
	Flags []string
	// IDs are the messages a flag, Copy, Move or Expunge command acts on;
	// for a DeleteMailbox of version 2, the messages its author saw in the
	// mailbox, the only ones it may remove.
	IDs []ID
	// Date is the received time (Deliver) or internal date (Append), in Unix
	// milliseconds.
	Date int64
	// Body is the message, byte for byte (Deliver, Append).
	Body []byte
	// Position and Digest describe a checkpoint: the log position it covers
	// and the SHA-256 of its encoded state, which is the Body when the
	// checkpoint itself is carried (it is not a log entry then, but sealed
	// the same way).
	Position uint64
	Digest   []byte

	// Seen, when set, is the head the author had applied.
	Seen *Head
	// Base is a Restoration's restored head: the last position at which
	// the spool's log and the history its writer had applied agree.
	Base *Head
}

// Errors returned by Decode and Validate.
var (
	ErrUnknownVersion = errors.New("unknown command encoding version")
	ErrUnknownKind    = errors.New("unknown command kind")
	ErrMalformed      = errors.New("malformed command")
	ErrInvalid        = errors.New("invalid command")
)

// field bits say which fields a kind uses.
type field uint16

const (
	fMailbox field = 1 << iota
	fMailboxID
	fNewName
	fSpecialUse
	fFlags
	fIDs
	fDate
	fBody
	fPosition
	fDigest
	fBase
)

// required and optional fields per kind, in encoding version v.
func fieldsOf(k Kind, v uint8) (required, optional field) {
	if v == Version2 {
		switch k {
		case Expunge:
			return fIDs, fFlags | fMailboxID
		case DeleteMailbox:
			return fMailbox, fMailboxID | fIDs
		}
		return 0, 0
	}
	switch k {
	case Deliver:
		return fDate, fBody
	case Append:
		return fMailbox | fDate, fMailboxID | fFlags | fBody
	case SetFlags, ClearFlags:
		return fFlags | fIDs, 0
	case ReplaceFlags:
		return fIDs, fFlags
	case Copy, Move:
		return fMailbox | fIDs, fMailboxID
	case Expunge:
		return fIDs, 0
	case CreateMailbox:
		return fMailbox, fSpecialUse
	case RenameMailbox:
		return fMailbox | fNewName, fMailboxID
	case DeleteMailbox, Subscribe, Unsubscribe:
		return fMailbox, fMailboxID
	case Checkpoint:
		return fPosition | fDigest, fBody
	case Body:
		return 0, fBody
	case Restoration:
		return fPosition | fDigest | fBase | fBody, 0
	}
	return 0, 0
}

func (c *Command) present() field {
	var f field
	set := func(ok bool, b field) {
		if ok {
			f |= b
		}
	}
	set(c.Mailbox != "", fMailbox)
	set(!c.MailboxID.IsZero(), fMailboxID)
	set(c.NewName != "", fNewName)
	set(c.SpecialUse != "", fSpecialUse)
	set(len(c.Flags) > 0, fFlags)
	set(len(c.IDs) > 0, fIDs)
	set(c.Date != 0, fDate)
	set(len(c.Body) > 0, fBody)
	set(c.Position != 0, fPosition)
	set(len(c.Digest) > 0, fDigest)
	set(c.Base != nil, fBase)
	return f
}

var fieldNames = []string{"mailbox", "mailbox id", "new name", "special use", "flags", "ids", "date", "body", "position", "digest", "base"}

func names(f field) string {
	var s []string
	for i, n := range fieldNames {
		if f&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	return strings.Join(s, ", ")
}

// Validate checks that c is well formed: a known kind, exactly the fields
// that kind uses, valid mailbox names and flags.
func (c *Command) Validate() error {
	if c.Kind < 1 || c.Kind > maxKind {
		return fmt.Errorf("%w %d", ErrUnknownKind, c.Kind)
	}
	if c.Version != 0 && c.Version != Version2 {
		return fmt.Errorf("%w %d", ErrUnknownVersion, c.Version)
	}
	if c.Version == Version2 && c.Kind != Expunge && c.Kind != DeleteMailbox {
		return fmt.Errorf("%w: %s in encoding version %d, which only Expunge and DeleteMailbox take", ErrInvalid, c.Kind, c.Version)
	}
	req, opt := fieldsOf(c.Kind, c.Version)
	have := c.present()
	if missing := req &^ have; missing != 0 {
		return fmt.Errorf("%w: %s without %s", ErrInvalid, c.Kind, names(missing))
	}
	if extra := have &^ (req | opt); extra != 0 {
		return fmt.Errorf("%w: %s does not take %s", ErrInvalid, c.Kind, names(extra))
	}
	for _, name := range []string{c.Mailbox, c.NewName} {
		if name != "" {
			if err := CheckMailboxName(name); err != nil {
				return err
			}
		}
	}
	if c.SpecialUse != "" && !specialUses[c.SpecialUse] {
		return fmt.Errorf("%w: unknown special use %q", ErrInvalid, c.SpecialUse)
	}
	for _, f := range c.Flags {
		if err := CheckFlag(f); err != nil {
			return err
		}
	}
	if (c.Kind == Checkpoint || c.Kind == Restoration) && len(c.Digest) != sha256.Size {
		return fmt.Errorf("%w: %s digest is %d bytes, want %d", ErrInvalid, c.Kind, len(c.Digest), sha256.Size)
	}
	if c.Base != nil && len(c.Base.Hash) != sha256.Size {
		return fmt.Errorf("%w: base hash is %d bytes, want %d", ErrInvalid, len(c.Base.Hash), sha256.Size)
	}
	if c.Kind == Restoration && c.Base.Pos > c.Position {
		return fmt.Errorf("%w: restoration base %d after its position %d", ErrInvalid, c.Base.Pos, c.Position)
	}
	if c.Seen != nil && c.Seen.Pos == 0 && len(c.Seen.Hash) == 0 {
		return fmt.Errorf("%w: empty seen head", ErrInvalid)
	}
	return nil
}

var specialUses = map[string]bool{
	`\All`: true, `\Archive`: true, `\Drafts`: true, `\Flagged`: true,
	`\Junk`: true, `\Sent`: true, `\Trash`: true,
}

// System flags that may be stored (RFC 9051 section 2.3.2; \Recent is
// session state, never stored).
var systemFlags = map[string]bool{
	`\Seen`: true, `\Answered`: true, `\Flagged`: true, `\Deleted`: true, `\Draft`: true,
}

// CheckFlag accepts a system flag in its canonical spelling or a keyword that
// is a valid IMAP atom (RFC 9051 section 9, flag-keyword).
func CheckFlag(f string) error {
	if strings.HasPrefix(f, `\`) {
		if !systemFlags[f] {
			return fmt.Errorf("%w: flag %q is not a storable system flag", ErrInvalid, f)
		}
		return nil
	}
	if f == "" || len(f) > 255 {
		return fmt.Errorf("%w: keyword must be 1 to 255 characters", ErrInvalid)
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return fmt.Errorf("%w: keyword %q has a character not allowed in an atom", ErrInvalid, f)
		}
	}
	return nil
}

// CheckMailboxName accepts UTF-8 names of at most 1000 bytes with no control
// characters; "/" separates hierarchy levels and may not start, end or
// double up.
func CheckMailboxName(name string) error {
	if name == "" || len(name) > 1000 {
		return fmt.Errorf("%w: mailbox name must be 1 to 1000 bytes", ErrInvalid)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: mailbox name is not UTF-8", ErrInvalid)
	}
	for _, r := range name {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("%w: mailbox name has a control character", ErrInvalid)
		}
	}
	if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return fmt.Errorf("%w: mailbox name %q has an empty hierarchy level", ErrInvalid, name)
	}
	return nil
}
