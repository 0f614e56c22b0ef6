// Package api is the spool server's HTTP API v1: the server handlers, the Go
// client, and request authentication. docs/API.md is the normative
// description; this comment states the invariants the code keeps.
//
// Implementation notes and invariants:
//
//   - Routes live under /v1 (HTTP semantics per RFC 9110). A user's log is
//     reached only by a request signed with that user's key (or, for
//     appends, with the spool's key); no shared secret is stored on the
//     server. The signature (Ed25519, RFC 8032) covers the method, the path,
//     the canonical query, SHA-256 of the body, a timestamp and a random
//     nonce. Timestamps more than Config.ClockSkew behind or
//     Config.FutureSkew ahead are refused, and a nonce is remembered until
//     its timestamp leaves the window, so a captured request cannot be
//     replayed. After a start, timestamps up to the start plus FutureSkew
//     are refused (503): an earlier process may have accepted them.
//   - An append without if_head, on a store that is a spool.OnceAppender,
//     is recorded in the store with its key id, nonce and the digest of its
//     signed message, in the append's transaction: a copy of it at any
//     process on the store appends nothing and is answered with the first
//     position; a copy at a process that saw its nonce is answered from
//     the record without its body being read, once the first copy's
//     handler has returned if it is still running there, and refused as a
//     replay if there is no record (docs/API.md §4, "Appends made once").
//   - Nothing is stored for a request before it passed every check: the key
//     is looked up (spool key or users database) before the signature is
//     verified, the signature before the nonce is recorded, and the nonce
//     goes into its own key's budget (Config.MaxNonces, SpoolKeyNonces), so
//     a stranger's requests store nothing and a key that floods locks out
//     only itself (429). The signature is checked before the body is read.
//   - Shares: a user's waiting long-polls (Config.MaxLongPolls) and an
//     address's connections (Config.MaxConnsPerAddr, on a listener wrapped
//     by Server.Listener) are bounded; beyond, 429. On that listener, an
//     address past Config.RefusalRate refusals a second has the answers to
//     its further refusals held (up to 2 s), so one address cannot make the
//     server answer thousands of refusals a second.
//   - Entries travel in a binary framing (application/vnd.cspool.entries):
//     unsigned LEB128 varints as in encoding/binary, minimal encoding only,
//     so each batch has exactly one encoding. A read response is a sequence of
//     (position, length, bytes) frames closed by a single 0 byte (positions
//     start at 1), so a truncated response is always detected. An append body
//     is a sequence of (length, bytes) frames filling the body exactly.
//   - A read response carries the log's head in the Cspool-Head header. Every
//     entry in the body has after < position <= head, in increasing order.
//   - Checkpoints: PUT /v1/users/{user}/checkpoint?pos=P stores the user's
//     checkpoint and compacts the log (spool.Compactor); only the user's own
//     key may upload or download one. The upload body is the kept positions
//     (a uvarint count, then uvarint differences, strictly increasing) and
//     the checkpoint's bytes to the end: one encoding per upload.
//   - Every read response carries Cspool-Checkpoint, the newest checkpoint's
//     position, read after the entries, so a compaction that deleted any
//     entry the response lacks is reported. If the checkpoint moves while a
//     response streams further chunks, the response ends before the chunk
//     read after the move; the next read reports it. A reader whose position
//     is below Cspool-Checkpoint rebuilds from the checkpoint.
//   - Every read response whose `after` is at or below the head carries
//     Cspool-Chain-Start and Cspool-Chain-Head, the chain hashes at `after`
//     and at Cspool-Head (every spool.Store keeps the chain), read after the
//     head; no entry after the head is sent. A hash never changes once its
//     position exists, so a client that receives every position up to the
//     head recomputes Cspool-Chain-Head exactly. They are mandatory in v1:
//     absent only when after is beyond the head, and a device with a chain
//     treats a read without them as an integrity alarm. Each hash has one
//     encoding, 64 lowercase hex digits; the client refuses anything else,
//     and one header without the other.
//   - Read responses are streamed: the server reads the store in chunks of
//     at most Config.ChunkBytes, reading the next chunk while writing the
//     current one, so its memory per request is about two chunks whatever
//     max_bytes is (plus one entry larger than a chunk). The first chunk is
//     at most firstChunkBytes and each next one at most twice the one
//     before, so the answer starts before the whole read is read.
//   - Long-poll: a read with wait > 0 that finds nothing blocks in
//     spool.Store.Wait until an entry arrives (from any process) or the wait,
//     capped at Config.MaxWait, ends; Server.Shutdown ends every wait early.
//     On a plain HTTP/1.1 connection accepted by Server.Listener the wait is
//     parked (park.go): the connection leaves net/http, one small goroutine
//     waits and answers, and the connection goes back to the HTTP server
//     through the listener. A parked read holds its user's share until its
//     wait ends even if the client went away; Server.Drain waits for the
//     answers after Shutdown.
//   - Errors are one Error type carrying a kind; the kind maps onto the HTTP
//     status (RFC 9110 section 15) on the server and back onto the kind in
//     the client, so IsTemporary means the same thing on both sides. Peers
//     get a short JSON text; the log gets the detail, with a request id, and
//     never entry contents, signatures or nonces.
package api
