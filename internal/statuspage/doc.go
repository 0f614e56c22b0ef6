// Package statuspage serves a device daemon's state to its user: an HTML
// page that refreshes itself, and the same data as JSON (/status.json) for
// scripts and, over the daemon's control socket, for `cspool status`.
//
// Implementation notes and invariants:
//
//   - The data comes through one small interface, Source, so the handler is
//     tested without a daemon; Collector is the daemon's Source, built from
//     the sync loop's Status and the local mail store.
//   - Every request to a Handler made by New needs the IMAP user name and
//     password (HTTP Basic auth, RFC 7617), both compared in constant time.
//     No password means no page: an empty password is accepted only when
//     the daemon allows it for IMAP.
//   - NewSocketHandler asks for no login and checks no Host: it is served
//     only on the control socket (internal/ownersock), whose directory lets
//     no other user in. FetchSocket, its client, sends no credentials, so
//     `cspool status` never sends the IMAP password anywhere.
//   - Requests whose Host header is not one of the configured names are
//     refused (421), so a web page that rebinds its DNS name to 127.0.0.1
//     cannot read the page through the user's browser.
//   - Nothing on the page or in the JSON is a message's content or a secret:
//     mailbox names, counts, positions, rejection reasons and errors only.
//     The password itself is never shown (the user just typed it); the page
//     says where it is stored.
//   - Responses are never cached (Cache-Control: no-store) and carry a
//     Content-Security-Policy that allows no script, no external resource
//     and only the page's own inline style (by hash).
//   - Integrity alarms (Report.Alarms) are shown first, in red. Alarms
//     derives them from syncer.Status; Config.Alarm adds any other source.
package statuspage
