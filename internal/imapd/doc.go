// Package imapd serves a device's mail store over IMAP (go-imap v2's
// imapserver), turning every mutation into a log command.
//
// Implementation notes and invariants (docs/IMAP.md has the full story):
//
//   - Mutations go through the log. STORE, COPY, MOVE, EXPUNGE, APPEND,
//     CREATE, DELETE, RENAME, (UN)SUBSCRIBE and the implicit \Seen of a
//     FETCH BODY[] each become exactly one command (one log entry, naming
//     every message it touches by id, never one entry per message), submitted
//     through Submitter. The tagged reply is written only after Submit
//     returns, that is after the device has applied the log up to that entry,
//     so a client sees its change in the order every other device sees it;
//     or, while the spool cannot be reached, once the change is queued on
//     the device and applied provisionally (docs/IMAP.md, "Offline").
//     The session never writes the store itself.
//   - UIDs (RFC 9051 section 2.3.1.1, RFC 3501 section 2.3.1.1) and
//     UIDVALIDITY come from the mail store, which assigns them in log order;
//     they are the same on every device and never reused. A mailbox whose
//     provisional UIDs the log gave to other messages gets a UIDVALIDITY of
//     this device's: it is deleted and created again for the sessions, and
//     the server forgets its in-memory state so a new SELECT loads it anew.
//   - A session reads the store only as it selected the mailbox
//     (mailstore.Selected: the id and the UIDVALIDITY it was shown), each
//     read checking the UIDVALIDITY in its own transaction: a mailbox made
//     again with another one is committed before Applied hears it, and
//     the session's UIDs would otherwise name its messages. A read that
//     finds another UIDVALIDITY, or the mailbox gone, reads nothing, and
//     the session's listing is dropped as Applied drops it (selectedError).
//   - Sequence numbers (RFC 9051 section 2.3.1.2): for each mailbox selected
//     by at least one session the server keeps the ordered UID list (the
//     server view: sequence number n is uids[n-1]) and, per session that
//     selected it, a view with an imapserver.MailboxTracker of its own
//     (holding that one session, so what is queued may differ between
//     sessions), all changed together under the mailbox mutex (lock-step):
//     an added UID is appended and announced to every view with
//     QueueNumMessages(len) (one message at a time: the tracker cannot map
//     jumps larger than one), a removed UID with QueueExpunge(its index+1)
//     before the next change is looked at, a flag change with
//     QueueMessageFlags. Client sequence numbers are mapped through the
//     session's SessionTracker (EncodeSeqNum, DecodeSeqNum) under the same
//     mutex, so no tracker ever sees a count or a sequence number out of
//     range.
//   - Updates are never left waiting (RFC 2177 section 3, RFC 9051 section
//     7): whatever is queued for a session is written after every command
//     the conn polls for and as soon as the session enters IDLE, then as it
//     is queued while the session idles. Idle is ours, not
//     SessionTracker.Idle, which only waits for updates queued after it
//     starts: a change made between a client's DONE and its next IDLE would
//     stay unsent until some later change or command.
//   - Loading: a mailbox's UID list is read lazily, when a session selects
//     it, together with the store position it reflects (the position read
//     before and after the list must agree). Applied ignores changes at or
//     before that position, since the list already has them: the sync loop
//     may be applying while a list loads. The list is dropped when the last
//     session leaves the mailbox.
//   - Expunges are sent only through the tracker (never also through
//     ExpungeWriter or MoveWriter.WriteExpunge), so a client never sees one
//     twice; non-UID FETCH, STORE and SEARCH do not flush them (RFC 9051
//     section 7.5.1), the conn's poll after the next command does.
//   - Keywords (RFC 9051 section 7.3.5): SELECT's FLAGS lists the keywords
//     in use in the mailbox; no FETCH shows a session a keyword before a
//     FLAGS that lists it. Flag changes from elsewhere queue a FLAGS first
//     when they bring a keyword the view has not queued; a FETCH the
//     session writes itself writes FLAGS first when the client may not
//     know a keyword yet (keywords.go says how that is known).
//   - Memory: only UID lists stay in memory; FETCH and SEARCH stream
//     messages one at a time from mailstore.Fetch and mailstore.Scan,
//     resolving the messages they name a block at a time (refCursor), and
//     the mailbox mutex is never held while writing to the network: the
//     targets of a command are resolved under the mutex, then the mutex is
//     released before any response is written.
//   - EXAMINE is read-only (RFC 9051 section 6.3.3): every mutation of the
//     selected mailbox gets NO, and FETCH BODY[] does not set \Seen.
//   - A session's own STORE does not come back to it as a duplicate untagged
//     FETCH: while its command is in flight, flag changes to the messages it
//     names are held back from its view; once its outcome is known, those
//     made by other entries are queued after all (with the message's latest
//     flags), its own are dropped unless an earlier flag update of that
//     message may still be unwritten. The session writes the FETCH FLAGS
//     itself unless .SILENT (RFC 9051 section 6.4.6).
//   - \Recent (RFC 3501 section 2.3.2) is per device and in memory:
//     recent.go states its rules.
//   - Login (RFC 9051 sections 6.2.2, 6.2.3): failed logins are answered
//     after a delay that grows per source and per connection, a connection
//     is closed after LoginLimits.MaxFailures of them, and a source with
//     MaxWaiting failures waiting is refused without a check. The state is
//     bounded (MaxSources) and so is the log (LogLines per LogInterval).
//     Closing goes through loginguard.Conn, which lets the tagged reply
//     out and then ends reads and writes, so pipelined logins are never
//     checked.
//   - Framing (RFC 9051 sections 2.2 and 7.1.3): every connection's input
//     goes through frameConn, which hands go-imap one whole command at a
//     time and only commands it parses; a line that is not a command gets
//     BAD there and the connection goes on. Synchronizing literals are
//     passed as non-synchronizing and the framer sends "+" only when the
//     library asks for the bytes, so a literal refused at its announcement
//     (APPENDLIMIT, RFC 7889) is never sent; what is left of a command the
//     library answered early is dropped, never read as a command. A
//     command is at most maxLine bytes, its lines together (literals
//     excluded), below the 50 KiB where go-imap stops reading one; a
//     longer one is refused whole, and the literal a dropped line
//     announces is dropped with it.
//   - Outcomes: a Rejected command gets NO with a response code (RFC 5530);
//     a Partial one (another device expunged some of the messages first) is
//     OK for what could be done (COPYUID lists only the copies made), with
//     the EXPUNGEs arriving as untagged responses; when nothing at all could
//     be copied or moved the reply is NO [EXPUNGEISSUED]. APPENDUID and
//     COPYUID (RFC 4315 section 3) pair each UID with the UIDVALIDITY of
//     the transaction that gave it (mailstore.Placement), not the one
//     read before the change was submitted, which a commit meanwhile may
//     have replaced. An unreachable spool gives NO [UNAVAILABLE] and
//     changes nothing; reads go on.
package imapd
