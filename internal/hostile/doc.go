// Package hostile is a dishonest spool operator, for testing what devices
// detect. A Proxy stands in front of a real spool server (the HTTP API of
// docs/API.md) and, on command, lies to the devices behind it: each device
// reaches the spool through its own listener, and each listener can be given
// a View, a story about the user's log to tell instead of the truth.
//
// Implementation notes:
//
//   - The proxy holds what a dishonest operator holds: the spool's database
//     (a spool.Store with its chain hashes and checkpoints) and the spool's
//     secret key. It never holds the user's key, so it cannot read entries
//     nor sign as the user.
//   - A listener without a View forwards every request unchanged to the
//     server (a reverse proxy; the signature covers method, path, query and
//     body, not the host, so requests verify as sent).
//   - A listener with a View answers reads itself: it reads the whole honest
//     log from the store, rewrites it with View.Rewrite, and writes the read
//     framing of docs/API.md §3 (uvarint position, length, data; a zero
//     position at the end) with Cspool-Head set to the rewritten log's last
//     position. It is a consistent liar: the chain headers are the real
//     hashes up to the first position where the story departs from the log,
//     and from there hashes recomputed with spool.ChainNext over the story,
//     so no header contradicts the entries it comes with. View.KeepHeaders
//     makes a naive liar instead, sending the server's real hashes, and
//     View.Headers edits the response headers last (strip, add, alter).
//   - Appends, checkpoint uploads and every other request are forwarded even
//     under a View; GET checkpoint and GET head follow the View. Two Views
//     change that: View.HoldCheckpoints answers a checkpoint upload itself
//     and keeps the checkpoint (Proxy.Held), so it can be served to a
//     device on the other side of a fork; View.LoseAppendAnswers forwards
//     an append and answers 502, so the device never learns where its
//     entries went.
//   - A View's reads do not check the request's signature: the operator
//     needs no permission to lie.
package hostile
