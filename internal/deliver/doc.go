// Package deliver seals incoming messages for their users and appends them
// to the spool, directly (cspool deliver) or through an LMTP listener that a
// mail transfer agent talks to.
//
// Implementation notes and invariants:
//
//   - A delivery is one entry: a command.Deliver carrying the message bytes
//     and the received time (Unix milliseconds), signed by the spool key and
//     encrypted to the recipient's public key (internal/entry). The spool key
//     cannot open what it sealed, so nothing on the delivery side can read a
//     message once Deliver has returned. Nothing here logs message contents or
//     full addresses; logs name the user, sizes and log positions only.
//   - Any byte string is a message: 8-bit data, NUL bytes, bare LF, no header
//     at all. The bytes are stored whole and never parsed or rewritten; only
//     the envelope's Return-Path and Delivered-To fields go in front (RFC 5321
//     section 4.4, Envelope), sealed with the message without copying it. Over
//     LMTP the message is the DATA content after dot-unstuffing (RFC 5321
//     section 4.5.2), up to and including the CRLF before the final ".".
//   - Success is reported only after the store acknowledged the append, which
//     for every spool.Store means the entry is durable. A failure reported as
//     temporary may still have appended the entry (a context that expired
//     during Append); the sender then retries and the user may see the message
//     twice. Delivery is at least once, never "maybe zero".
//   - Every failure has a Kind (KindOf) that maps onto the replies of each
//     protocol: LMTP codes with RFC 3463 enhanced status codes, and sysexits
//     for cspool deliver. Unknown failures are temporary, so a mail transfer
//     agent keeps the message queued rather than bouncing it.
//   - LMTP (RFC 2033): one reply per accepted RCPT after DATA (section 4.2), in
//     RCPT order. Each distinct user gets one independently sealed entry, and
//     that user's 250 is sent only after the entry is durable. The users of one
//     message are delivered concurrently so the store can commit them in one
//     group (one fsync). A recipient named twice, or reached through two
//     addresses, gets one entry and the same reply for each RCPT.
//   - The listener's memory is bounded whatever clients send: command lines
//     are at most CommandLineLimit octets (RFC 5321 section 4.5.3.1.4 and
//     extensions), connections are capped in all and per client address
//     (421 in place of the greeting), and every byte of a message is
//     reserved in the in-flight budget before it is kept (inbox). A message
//     refused for the budget or the size limit is still read to its end, so
//     the sender gets its 452 or 552 and the connection stays in step.
//   - go-smtp reads the command lines; the message after DATA is read by
//     smtpdata.Reader, not by go-smtp's reader, which misses the end of the
//     data after a line ending in a bare CR (docs/DELIVERY.md). lmtpConn
//     (an smtpdata.Conn) hands go-smtp one line per Read, so it never holds
//     message bytes.
//   - Recipients are checked at RCPT time (RFC 5321 section 3.3): a local part
//     that is not a user gets 550 5.1.1, a domain outside LMTPOptions.Domains
//     gets 550 5.1.2, a directory failure gets 451 4.3.0. A local part is
//     looked up as written and then in lower case (user names are case
//     sensitive, RFC 5321 section 2.4, but mail transfer agents often change
//     case); with a recipient delimiter, "user+tag" falls back to "user".
package deliver
