// Package outbox is a device's durable queue of outgoing mail: it keeps what
// the submission listener (package submit) accepted, relays it through the
// user's provider (the smarthost), and files the copy in Sent, and a
// delivery status notification in INBOX for what the smarthost refused,
// through the user's log, so that every device sees them.
//
// Implementation notes and invariants (docs/SENDING.md has the full story):
//
//   - State: one SQLite file next to the mail database (DB.outbox), WAL and
//     synchronous=FULL like the mail store: Enqueue returns only after the
//     message and its recipients are committed, so "250 from the listener"
//     means "on disk". Every later step (relay results, bounces to file, the
//     Sent copy filed) is one transaction.
//   - Order: messages are tried in the order they were accepted, over one
//     connection to the smarthost, kept open idleConn after the queue
//     empties (RSET checks it before reuse). A connection that cannot be made holds
//     the whole queue (with exponential backoff); a temporary reply to one
//     message (4xx at MAIL, RCPT or DATA) holds only that message, with its
//     own backoff, and the others go on.
//   - Time: next tries are the device's clock (a next try further ahead
//     than MaxBackoff is due at once: the clock was ahead); the give-up
//     limit (MaxAge) counts by the queue clock, the time the outbox has
//     run by the monotonic clock, kept in the database (queueClock), so
//     that setting the device's clock neither bounces a message early nor
//     keeps it late; saved every ClockSaveEvery while messages wait.
//   - Home: the outbox records the machine (machine-id) and file (inode,
//     and birth time on Linux) it was opened in (home.go); found in
//     another, it holds the messages it had to relay, which the outbox it
//     was copied from may relay too,
//     until Config.ReleaseHeld names that hold at a later open (each hold
//     gets a new random name, so the open that holds them cannot release
//     them, nor can a name left in a unit release a later hold).
//     Submissions after that are relayed.
//   - Exactly once: a recipient is pending until the smarthost's reply to
//     the end of DATA is recorded. A crash before the final dot is sent
//     leaves nothing at the smarthost (it discards an unfinished
//     transaction); the one window where a crash causes a duplicate is
//     between the smarthost's 250 to the final dot and the commit that
//     records it (milliseconds), as for any SMTP client (RFC 1047): the
//     message is sent again after the restart. A client that lost the
//     listener's 250 (crash between commit and reply) and sends the same
//     message again within DuplicateWindow is recognised by Message-ID,
//     envelope and content digest (of the bytes as the client sent them),
//     and gets the first one's queue id; a message the client sent without
//     Message-ID (the listener adds a new one each time) by envelope and
//     bytes alone, when the client wrote its Date.
//   - Filing: the Sent copy (once the smarthost accepted the message for at
//     least one recipient) and bounces are rows to file, processed in order.
//     Before filing, the target mailbox is searched for a message with the
//     same Message-ID added since the message was submitted (for one the
//     listener gave a Message-ID, one without a Message-ID with the same
//     content, submit.ContentDigest) that is not another submitted
//     message's Sent copy (two messages may share a Message-ID, and each
//     gets its copy): a crash between the log append and
//     the commit that records it, or a client that saved its own copy,
//     leaves one copy, never two. A client's copy appended into Sent
//     before the submission is recorded in the outbox (client_copies), so
//     the search takes it in after a restart too. After a restart,
//     or after an append whose outcome is unknown, nothing is filed until
//     the device has applied the log up to the spool's head.
//   - Bounces follow RFC 3464 (multipart/report), honour NOTIFY (RFC 3461),
//     and carry the original message or, with RET=HDRS, its header.
package outbox
