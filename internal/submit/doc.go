// Package submit is the device's mail submission listener (RFC 6409): an
// SMTP server on localhost that takes a mail client's outgoing messages,
// checks them, and hands them to a durable queue (package outbox) that
// relays them through the user's provider.
//
// Implementation notes and invariants (docs/SENDING.md has the full story):
//
//   - Authentication first: MAIL before a successful AUTH (PLAIN or LOGIN,
//     RFC 4954, with the daemon's IMAP user and password) gets 530 5.7.0.
//     Failed logins go through the same guard as IMAP logins (package
//     loginguard): each failure is answered late, a connection is closed
//     after a few, a source with too many failures waiting is refused.
//   - Identities: the envelope sender and every address of every
//     originator field (From; Sender; the Resent-From and Resent-Sender of
//     every resent block, RFC 5322 section 3.6.6) must be one of
//     Config.Identities, compared without regard to case; otherwise 553
//     5.7.1. The message must have one From header, and at most one Sender
//     (RFC 5322 section 3.6), and its newest resent block (the first run of
//     Resent- fields) one Resent-From and at most one Resent-Sender; 554
//     5.6.0 otherwise.
//   - Every "@" in an originator field, as written and with its RFC 2047
//     words decoded, is part of an identity (namedAddresses): a display
//     name, a comment or a quoted string reading as another address is
//     what readers show as the author; 553 5.7.1 otherwise. An originator
//     field holds mailboxes only: a group or a route (a ':' or ';' outside
//     quotes and comments, hasGroup) gets 554 5.6.0, and so does a header
//     field name with blanks before its colon (checkFieldNames), which
//     Postfix and Python's email read otherwise than go-message.
//   - Envelope addresses: one holding a control character gets 501, one
//     beyond ASCII 553 5.6.7 unless MAIL gave SMTPUTF8 (checkAddress):
//     go-smtp's parser keeps such bytes, and the relay cannot write them.
//   - Only CRLF ends a line (RFC 5321 section 2.3.8): a message holding a
//     bare CR or a bare LF, in its header or its body, or whose last line
//     does not end with CRLF (BDAT), gets 554 5.6.0. The
//     relay writes a bare CR as it is, and "\r.\r\n" ends the data for a
//     next hop that ends lines at a bare CR (SMTP smuggling); in the
//     header, the checks and a reader would see different fields.
//   - A line holds at most 998 bytes before its CRLF (MaxLineBytes; RFC
//     5322 section 2.1.1): a longer one gets 554 5.6.0, since the
//     smarthost would break it (Postfix) or refuse it after the 250.
//   - The message is kept byte for byte, Bcc included (the copy in Sent is
//     the whole message); Message-ID and Date are added at the top of the
//     header when missing (RFC 6409 section 8), so that every message has
//     the identity the queue and the Sent copy are matched by. StripBcc
//     gives what is relayed.
//   - 250 means durable: Data returns only after Queue.Enqueue has returned,
//     and Enqueue returns only once the message is on disk (fsync). A client
//     that lost the 250 and sends the same message again is the queue's to
//     recognise (see outbox).
//   - DATA is read by the session (package smtpdata), byte for byte, not by
//     go-smtp's reader, which mishandles bare CRs.
//   - Limits: the message size (SIZE, 552 5.3.4 beyond it, naming the
//     limit, read to its end so the connection stays in step), recipients per message (452 4.5.3),
//     command lines of 4096 octets. Protocol errors
//     get 5xx and the connection stays usable, up to go-smtp's error count.
//   - Memory: messages being received take room from Config.DataMemory
//     as their bytes arrive, never more than the size limit each, under
//     the banker's rule, so that messages that keep coming all end (room);
//     a client that sends nothing of its message for DataIdleTimeout, or
//     whose message takes longer than ReadTimeout, gets 421 4.4.2 and is
//     closed, its room given back (dataWatch).
package submit
