package pgstore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/spool/spooltest"

	"github.com/jackc/pgx/v5"
)

// seed gives each of users logs of n entries of seedBytes, by SQL, in one
// transaction without the store's statement timeout (100,000 users of 10
// entries take seconds, more than the timeout allows one statement).
func seed(b *testing.B, s *Store, users, n int) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback(ctx)
	steps := []struct {
		q    string
		args []any
	}{
		{"SET LOCAL statement_timeout = 0", nil},
		{`INSERT INTO cspool_logs (name, bytes)
		SELECT convert_to('u' || u, 'UTF8'), $2 FROM generate_series(1, $1) u`, []any{users, n * seedBytes()}},
	}
	if n > 0 {
		for _, q := range seedEntries {
			steps = append(steps, struct {
				q    string
				args []any
			}{q, []any{n, seedBytes()}})
		}
	}
	for _, st := range steps {
		if _, err := tx.Exec(ctx, st.q, st.args...); err != nil {
			b.Fatalf("seeding %d users of %d entries: %v", users, n, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	for _, q := range []string{"SET statement_timeout = 0", "VACUUM ANALYZE cspool_logs", "VACUUM ANALYZE cspool_entries", "RESET statement_timeout"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("seeded %d users of %d entries in %v", users, n, time.Since(start).Round(time.Millisecond))
}

// BenchmarkAppendLogSize: 10 KB appends to one user whose log already holds
// 1,000 to 1,000,000 entries (8 appenders).
func BenchmarkAppendLogSize(b *testing.B) {
	o := &opener{dsns: map[*Store]string{}}
	o.db = dbForBench(b)
	for _, n := range []int{1_000, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := openBench(b, o)
			seed(b, s, 1, n)
			benchAppends(b, s, 1, false)
		})
	}
}

// BenchmarkAppendUsers: 10 KB appends spread over 10 to 100,000 users with
// 10 entries each (8 appenders), the users in a scattered order
// (benchUser). Besides the time it reports the WAL bytes and full-page
// images per append (cluster-wide: run it on an otherwise idle server);
// with CSPOOL_BENCH_CHECKPOINT set it runs a CHECKPOINT first, so that
// every page the appends change pays its full-page image (the worst case,
// and the same in every run). With -v it prints the WAL range and the
// store's relations for bench/postgres/walrels.py.
func BenchmarkAppendUsers(b *testing.B) {
	o := &opener{dsns: map[*Store]string{}}
	o.db = dbForBench(b)
	for _, n := range []int{10, 100, 1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			s := openBench(b, o)
			seed(b, s, n, 10)
			benchAppends(b, s, n, false)
		})
	}
}

// BenchmarkAppendSpoolKey: BenchmarkAppendUsers at 1,000 users, with the
// appends unbound (key=false) and bound to the recorded spool key
// (key=true), as a server started with --spool-key appends: each append
// then takes the shared advisory lock and reads cspool_spool_key in its
// transaction (schema/0007.sql).
func BenchmarkAppendSpoolKey(b *testing.B) {
	o := &opener{dsns: map[*Store]string{}}
	o.db = dbForBench(b)
	for _, bound := range []bool{false, true} {
		b.Run(fmt.Sprintf("key=%v", bound), func(b *testing.B) {
			s := openBench(b, o)
			seed(b, s, 1_000, 10)
			if bound {
				if err := s.KeepSpoolKey(context.Background(), bytes.Repeat([]byte{0xa}, 64)); err != nil {
					b.Fatal(err)
				}
			}
			benchAppends(b, s, 1_000, false)
		})
	}
}

// BenchmarkAppendOnce: BenchmarkAppendUsers at 1,000 users, bound to the
// spool key as a server's appends are, with plain appends (once=false)
// and with each append recording its request (once=true: AppendOnce, a
// fresh name each, kept 6 minutes, as the API appends a delivery over
// HTTP; schema/0008.sql).
func BenchmarkAppendOnce(b *testing.B) {
	o := &opener{dsns: map[*Store]string{}}
	o.db = dbForBench(b)
	for _, once := range []bool{false, true} {
		b.Run(fmt.Sprintf("once=%v", once), func(b *testing.B) {
			s := openBench(b, o)
			seed(b, s, 1_000, 10)
			if err := s.KeepSpoolKey(context.Background(), bytes.Repeat([]byte{0xa}, 64)); err != nil {
				b.Fatal(err)
			}
			benchAppends(b, s, 1_000, once)
		})
	}
}

func benchAppends(b *testing.B, s *Store, users int, once bool) {
	data := make([]byte, 10<<10)
	var next atomic.Int64
	b.SetBytes(int64(len(data)))
	b.SetParallelism(4) // 4 x GOMAXPROCS(2) = 8 appenders on the test machine
	wal := func() (syncs, bytes, fpi int64) {
		// On a connection of its own: the store is closed before the last call.
		c, err := pgx.Connect(context.Background(), s.dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(context.Background())
		c.QueryRow(context.Background(), "SELECT wal_sync, wal_bytes, wal_fpi FROM pg_stat_wal").Scan(&syncs, &bytes, &fpi)
		return syncs, bytes, fpi
	}
	ctx := context.Background()
	if os.Getenv("CSPOOL_BENCH_CHECKPOINT") != "" {
		// Every page the appends touch is then a first change since a
		// checkpoint: the most full-page images the appends can cost.
		if _, err := s.pool.Exec(ctx, "CHECKPOINT"); err != nil {
			b.Fatalf("CHECKPOINT: %v", err)
		}
	}
	var startLSN string
	s.pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&startLSN)
	before, _, beforeFPI := wal()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			u := fmt.Sprintf("u%d", benchUser(i, users))
			var err error
			if once {
				_, _, err = s.AppendOnce(context.Background(), u, spooltest.DeliveryOnce(), 0, [][]byte{data})
			} else {
				_, err = s.Append(context.Background(), u, [][]byte{data})
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	// Cluster-wide: run on an otherwise idle server. The WAL bytes are the
	// distance between two insert positions, exact; the counts of
	// pg_stat_wal reach it only when each backend flushes its statistics
	// (at most once a second, or at exit): close the store first, then wait
	// until they stop moving.
	var endLSN string
	var walBytes int64
	s.pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text, pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)::bigint",
		startLSN).Scan(&endLSN, &walBytes)
	if b.N > 1 {
		// For pg_waldump --start START --end END (bench/postgres/walrels.py):
		// the WAL of the timed appends and the files of the store's relations.
		b.Logf("WAL %s to %s; %s", startLSN, endLSN, relfiles(b, s))
	}
	if b.N > 1 {
		// What the reads that derive a log's numbers cost at this size.
		start := time.Now()
		u, err := s.UsageSummary(ctx, 0)
		took := time.Since(start)
		start = time.Now()
		for i := range 100 {
			if _, err := s.Head(ctx, fmt.Sprintf("u%d", benchUser(int64(i), users))); err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("UsageSummary over %d logs: %v (%v); Head: %v each", u.Logs, took.Round(time.Millisecond), err,
			(time.Since(start) / 100).Round(time.Microsecond))
	}
	s.Close()
	var after, afterFPI int64
	for deadline, last := time.Now().Add(15*time.Second), int64(-1); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		var fpi int64
		after, _, fpi = wal()
		if fpi == last {
			break
		}
		last, afterFPI = fpi, fpi
	}
	if d := after - before; d > 0 {
		b.ReportMetric(float64(b.N)/float64(d), "appends/walsync")
	}
	b.ReportMetric(float64(walBytes)/float64(b.N), "walbytes/op")
	b.ReportMetric(float64(afterFPI-beforeFPI)/float64(b.N), "fullpages/op")
}

// relfiles names the store's relations (tables, their indexes and TOAST)
// with their tablespace/database/filenode, as pg_waldump prints them.
func relfiles(b *testing.B, s *Store) string {
	rows, err := s.pool.Query(context.Background(), `SELECT c.relname, c.reltablespace::bigint, d.oid::bigint, pg_relation_filenode(c.oid)::bigint
		FROM pg_class c, pg_database d
		WHERE d.datname = current_database() AND pg_relation_filenode(c.oid) IS NOT NULL AND (
			c.relnamespace = current_schema()::regnamespace OR
			c.oid IN (SELECT reltoastrelid FROM pg_class WHERE relnamespace = current_schema()::regnamespace) OR
			c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT reltoastrelid FROM pg_class WHERE relnamespace = current_schema()::regnamespace)))
		ORDER BY 1`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		var ts, db, node int64
		if err := rows.Scan(&name, &ts, &db, &node); err != nil {
			b.Fatal(err)
		}
		if ts == 0 {
			ts = 1663 // pg_default
		}
		out = append(out, fmt.Sprintf("%s=%d/%d/%d", name, ts, db, node))
	}
	return strings.Join(out, " ")
}

// benchUser is the user of the i-th append: every user in turn, but in an
// order that scatters them (i times a prime, modulo users), as mail comes
// for users in no particular order, rather than in the order of their ids
// (neighbours on every page of every index).
func benchUser(i int64, users int) int64 {
	if os.Getenv("CSPOOL_BENCH_ORDERED") != "" {
		return i%int64(users) + 1
	}
	return (i*7919)%int64(users) + 1
}

// seedEntries gives every log $1 entries of $2 bytes with their chain
// hashes (not the true ones: the benchmarks do not verify).
var seedEntries = []string{
	`INSERT INTO cspool_entries (log_id, pos, size, data, hash)
	SELECT l.id, p, $2, decode(repeat('ab', $2), 'hex'), sha256(int8send(l.id * $1 + p))
	FROM cspool_logs l, generate_series(1, $1) p`,
}

// seedBytes is the size of a seeded entry: 16 bytes, so that a seeded row
// of cspool_entries takes the room of an appended one (whose data is an
// 18-byte pointer to TOAST), and no page of the table keeps room for just
// one appended row: VACUUM would record those gaps, and each append would
// fill one on a page of its own.
func seedBytes() int {
	if v := os.Getenv("CSPOOL_BENCH_SEED_BYTES"); v != "" {
		var n int
		fmt.Sscan(v, &n)
		return n
	}
	return 16
}
