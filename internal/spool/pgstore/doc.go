// Package pgstore is the PostgreSQL spool.Store: every user's log in one
// PostgreSQL database, shared by any number of cspool server processes.
//
// Implementation notes and invariants (docs/POSTGRES.md has the full story):
//
//   - Schema: created and migrated by Open from versioned SQL files embedded
//     in the binary (schema/NNNN.sql). Migration runs in one transaction that
//     first takes pg_advisory_xact_lock(SchemaLockKey), so servers starting at
//     the same time apply each step exactly once. A database whose
//     cspool_schema.version is newer than the newest file is refused
//     (ErrNewerSchema) and never touched.
//   - Positions (schema/0005.sql): one Append is one statement (in the
//     group's transaction) calling cspool_append_within, which updates the
//     usage on the user's cspool_logs row (an upsert at the first append),
//     taking the row lock: appenders of one user are serialised by it,
//     whatever pool or process they come from, and appenders of different
//     users never contend. Only then does it read the head, in a statement
//     whose snapshot sees every append that held the lock before: the
//     highest position among the log's entries and the hashes of deleted
//     ones (cspool_tip). The batch's entries are inserted at head+1..head+n
//     by the same statement, so a batch is visible all at once or not at
//     all, and the primary key would refuse a position taken twice. The
//     pages an append changes that its user chooses are the log row's
//     (a HOT update: fillfactor 50) and one leaf of cspool_entries' primary
//     key, each logged whole by its first change after a checkpoint.
//     Compaction deletes entries rows, and a trigger moves their hashes into
//     cspool_chain, so positions are never reused or renumbered and the
//     head never goes back.
//   - Chain (spool.Chainer): the append computes the chain hash of every
//     entry from the hash at the head and stores it on the entry's row;
//     nothing may change it (trigger), and deleting entries hands the hashes
//     to cspool_chain, which nothing updates or deletes from (triggers), so
//     the hash of every position up to the head stays answerable.
//   - Spool key (schema/0007.sql, spool.KeyKeeper): once KeepSpoolKey has
//     bound the Store to a key, every append passes it to
//     cspool_append_within, which takes SpoolKeyLockKey shared (to the
//     group's commit) and appends only if cspool_spool_key holds the key,
//     else SQLSTATE CSP04 (a *spool.KeyReplacedError). KeepSpoolKey takes
//     the lock exclusively before it looks for logs and records a key, so
//     an append bound to a replaced key never commits.
//   - Spool key held (hold.go, spool.KeyHolder): HoldSpoolKey runs the
//     same transaction on a connection of the Store's own, which then keeps
//     the advisory lock (HoldLockClass, OID of cspool_spool_key) shared for
//     the Store's life. Recording another key tries that lock exclusively
//     for its transaction, under SpoolKeyLockKey, and is refused
//     (*spool.LiveKeyError) while any session holds it. A session's locks
//     end with it, so a killed process's hold ends when PostgreSQL ends its
//     session; a hold lost while the Store runs refuses its appends
//     (*spool.HoldLostError) until keepHold has taken it again.
//   - Appends made once (schema/0008.sql, spool.OnceAppender): AppendOnce
//     passes the request's id, digest and expiry to cspool_append_within,
//     which, after the log's row lock and the tip, inserts the record into
//     cspool_once ON CONFLICT DO NOTHING: a copy of the request at any
//     process waits for the first's commit, then finds the record and
//     raises CSP05 (the recorded position: repeat) or CSP06 (another
//     digest), and its savepoint leaves nothing. Each such call first drops
//     at most spool.OncePrune expired records (SKIP LOCKED).
//   - Durability: every connection runs with synchronous_commit = on, so
//     COMMIT returns only after the commit record is flushed to the WAL on
//     disk; Append returns after COMMIT.
//   - Sessions: every connection keeps one PostgreSQL session for its life
//     (the hold is a session lock, the listener a LISTEN, the settings
//     session settings). Open refuses, with ErrSharedSessions, a DSN whose
//     connections share sessions between transactions or clients (a
//     pooler in transaction or statement mode; session.go), and every
//     connection starts its session afresh (DISCARD ALL: a pool may hand
//     over the last client's session as it was) and sets its parameters
//     by SQL, not in the startup message, which PgBouncer refuses or drops
//     (internal/pgsession, as the users table's connections do).
//   - Group commit (writer.go): one writer goroutine per Store takes every
//     Append waiting at the moment (bounded by Options.MaxGroupCount and
//     MaxGroupBytes), sorts them by user name (stable), and runs them in one
//     transaction, each under its own savepoint, pipelined in one round
//     trip; a failing call is rolled back to its savepoint alone. One COMMIT,
//     one WAL flush, then every caller is answered. Row locks are taken in
//     name order by every group of every process, so groups cannot deadlock.
//   - Wake-up: the append statement calls pg_notify(NotifyChannel, hex of
//     the user name); PostgreSQL delivers it to every listener at commit.
//     Each Store keeps one dedicated connection that LISTENs and fans
//     notices out to its in-process waiters, which then re-read the head
//     from the database (a notice never wakes a waiter by itself). After
//     losing that connection the Store reconnects and wakes every waiter so
//     it re-checks. As a safety net the Store re-reads, every
//     Options.RecheckInterval, the heads of all waited users in one query
//     and wakes those whose head moved; a Wait has no timer of its own.
//   - Reads are bounded: positions and sizes are chosen first with a LIMIT
//     over the small (pos, size) columns, then exactly the chosen entries'
//     data is streamed.
//   - Failures: every call is bounded by Options.StatementTimeout (server
//     side statement_timeout and a client deadline). A lost or refused
//     connection, an admin shutdown, a statement timeout, a serialization
//     failure or deadlock, or a full disk is wrapped in spool.ErrUnavailable;
//     the pool reconnects by itself once the server is back.
package pgstore
