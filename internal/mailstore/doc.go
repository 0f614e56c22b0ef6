// Package mailstore is a device's local mail state in one SQLite database,
// and the deterministic apply of the user's log (package command) to it.
//
// Implementation notes and invariants (docs/MAILSTORE.md has the full story):
//
//   - Determinism: the state after applying entries 1..n depends only on
//     those entries and their order, never on the batching of Apply calls,
//     on the clock or on the device. Every device replaying the same log
//     shows the same mailboxes, UIDVALIDITYs, UIDs and flags. Dump and
//     Checksum expose the whole state so tests compare stores field by field.
//   - Atomicity: one Apply is one SQLite transaction (BEGIN IMMEDIATE, WAL,
//     synchronous=FULL) that applies its entries and records the new log
//     position; a crash or an error at any point leaves the previous state
//     and position untouched. Entry ids are recorded as they are applied, so
//     a replayed entry is rejected, never applied twice.
//   - Identity: a message is named by the id of the entry that created it
//     (Deliver, Append) or by command.DeriveID(entry, i) for the i-th id of a
//     Copy entry; never by its Message-ID header. A mailbox is named by the
//     id of the entry that created it; the six initial mailboxes (INBOX,
//     Sent, Drafts, Trash, Junk, Archive, RFC 6154 special uses) have fixed
//     ids and UIDVALIDITYs 1 to 6.
//   - UIDs (RFC 9051 section 2.3.1.1, RFC 3501 section 2.3.1.1): each mailbox
//     has a UIDNEXT that only grows; a message added to a mailbox (deliver,
//     append, copy, move) takes UIDNEXT and increments it, in log order, so
//     UIDs are strictly increasing and never reused. A new mailbox takes its
//     UIDVALIDITY from a store-wide counter that only grows, so a mailbox
//     recreated under an old name never repeats a UIDVALIDITY.
//   - Authorization: an entry by the spool may only Deliver. Rejected
//     entries (wrong author, replay, invalid or impossible command) change
//     nothing but the rejection table and are reported in Result.
//   - Messages are parsed once, at apply time (or before it, Prepare): the
//     store knows no message format, and keeps what its Parser (package
//     mimeform, given to Open) makes of the bytes: ENVELOPE and extended
//     BODYSTRUCTURE (RFC 9051 section 7.5.2) as stored and as IMAP writes
//     them, the header length and how much parsed. These, RFC822.SIZE and
//     INTERNALDATE are stored next to the raw bytes, which are kept byte
//     for byte and shared (by SHA-256, with a reference count) between
//     copies, and given back as they were stored.
//   - Locking: one write connection, and Apply calls are serialised by a
//     mutex; reads use a pool of read-only connections and see the last
//     committed state (WAL snapshots), never a half-applied batch.
//   - WAL size: a commit that leaves the WAL above 64 MiB is followed, on
//     the write connection and under the write mutex, by a TRUNCATE
//     checkpoint that waits at most 250 ms for readers (wal.go), so
//     readers that never pause cannot make the WAL grow without bound.
//   - Flags: system flags are a bitmask; keywords are matched
//     case-insensitively (RFC 9051 section 2.3.2) and spelled as first
//     written anywhere in the store.
package mailstore
