// Package faults holds cspool's fault-injection and soak tests. It has no
// code of its own: the tests build the cspool binary and run it as a real
// spool server (SQLite or PostgreSQL store, HTTP API and LMTP) and two
// device daemons (`cspool imap-server`), drive them with LMTP deliveries and
// IMAP mutations over loopback TCP, and break things while the load runs:
// kill -9 of the server, of a daemon and of PostgreSQL, the spool stopped
// for a while, and a full disk under the spool and under a device; and
// (crashpoints_test.go) kills at chosen steps: the server while the MTA
// sends again what got no answer, a new device during its rebuild from a
// checkpoint (and a copy of its files as a power cut leaves them), a
// daemon inside IMAP commands that change hundreds of messages.
//
// Implementation notes. After every fault the tests check the invariants the
// design promises:
//
//   - every message acknowledged with 250 is in INBOX or Archive exactly once
//     on both devices (each delivery carries a unique X-Fault-Token header);
//     a message that got a temporary failure may be there too (at least
//     once, docs/DELIVERY.md), but never twice;
//   - nothing is applied twice: no token is seen twice and no device has
//     rejected an entry (but a delivery the load sent again, which the
//     devices reject as a retry) or raised an integrity alarm;
//   - both devices converge: once both have applied the log to the spool's
//     head, their mailstore Dumps are equal field for field;
//   - while a fault lasts the clients see only the documented temporary
//     errors: LMTP 4xx or a refused or dropped connection, IMAP NO
//     [UNAVAILABLE] (and NO [EXPUNGEISSUED] when two devices race for one
//     message), HTTP 503; IMAP changes made while the spool cannot be
//     reached are answered OK and wait on the device, and must land once
//     (offline_test.go: the changes of a client on a device cut off, across
//     a SIGKILL of its daemon, and another device's on the same messages);
//     after a fault of the spool or of the device's disk, a command may
//     also get NO [NONEXISTENT]
//     if its selected mailbox was given a new UIDVALIDITY because a change
//     queued meanwhile took UIDs the log gave to other messages
//     (docs/IMAP.md, "Offline"), which the load checks by selecting the
//     mailbox again: it must be there, with a greater UIDVALIDITY of the
//     device's own range (2^31 up). Any other NO [NONEXISTENT] fails.
//
// The fault tests call t.Parallel: each has a cluster of its own (ports,
// directories, a PostgreSQL server of its own for TestKillPostgres), and
// most of their time is spent waiting on the subprocesses. They run two at
// a time on a 2-core machine (-parallel defaults to GOMAXPROCS). The soak
// runs alone, before them, so its RSS figures are its own.
//
// docs/FAULTS.md has the table of faults, expected and observed outcomes,
// and the soak figures. The soak test runs with CSPOOL_HEAVY=1 (CI sets
// it) or CSPOOL_SOAK, which sets its duration (default 15s).
package faults
