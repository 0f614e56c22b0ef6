package mailstore

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ncruces/go-sqlite3"
)

// sizedMessage is a message of about size bytes whose body is words of
// its own, so that no two are the same body and the index has terms.
func sizedMessage(i, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: a@example.org\r\nTo: b@example.org\r\nSubject: message %d\r\nMessage-ID: <%d@example.org>\r\n\r\n", i, i)
	for w := 0; b.Len() < size; w++ {
		fmt.Fprintf(&b, "w%dx%d ", i%97, w)
		if w%12 == 11 {
			b.WriteString("\r\n")
		}
	}
	return b.String()
}

// writerRaw runs f on the writer's SQLite connection.
func writerRaw(t *testing.T, s *Store, f func(c *sqlite3.Conn)) {
	t.Helper()
	ctx := context.Background()
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Raw(func(dc any) error {
		f(dc.(interface{ Raw() *sqlite3.Conn }).Raw())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRunBindsBoundedBodies: the statements that store a run's bodies
// bind at most runBoundBytes of messages (one message alone if larger),
// and messages of 2 KB still go 64 to a statement.
func TestRunBindsBoundedBodies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		size    int
		maxRows int
	}{
		{10 << 10, runBoundBytes / (10 << 10)},
		{2 << 10, 64},
		{200 << 10, 1},
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			t.Parallel()
			s := openTest(t)
			var l testLog
			var batch []Entry
			for i := range 64 {
				batch = append(batch, l.spool(deliverCmd(sizedMessage(i, tc.size))))
			}
			var rows []int
			writerRaw(t, s, func(c *sqlite3.Conn) {
				// TRACE_PROFILE: once at the end of each statement's run.
				if err := c.Trace(sqlite3.TRACE_PROFILE, func(_ sqlite3.TraceEvent, st, _ any) error {
					if q := st.(*sqlite3.Stmt).SQL(); strings.HasPrefix(q, "INSERT INTO blobs ") {
						rows = append(rows, strings.Count(q, "(?, ?)"))
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			})
			mustApply(t, s, batch...)
			writerRaw(t, s, func(c *sqlite3.Conn) { c.Trace(0, nil) })
			total, most := 0, 0
			for _, r := range rows {
				total += r
				most = max(most, r)
			}
			if total != 64 || most > tc.maxRows || (tc.size == 2<<10 && most != 64) {
				t.Errorf("messages of %d bytes stored by statements of %v rows; want 64 in all, at most %d (%d bytes) a statement", tc.size, rows, tc.maxRows, runBoundBytes)
			}
		})
	}
}

// TestRunFormsNotCutByBodies: a run's forms and structures are small and
// go in the run's chunks (64 rows a statement), however large the bodies
// whose bytes are cut by runBoundBytes: 64 deliveries of 10 KB take one
// statement for each, not one for every 8 (or every message, when each
// is larger than runBoundBytes).
func TestRunFormsNotCutByBodies(t *testing.T) {
	t.Parallel()
	for _, size := range []int{10 << 10, 200 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			s := openTest(t)
			var l testLog
			var batch []Entry
			for i := range 64 {
				batch = append(batch, l.spool(deliverCmd(sizedMessage(i, size))))
			}
			tr := traceStatements(s)
			mustApply(t, s, batch...)
			forms, structures := tr.count("INSERT INTO forms "), tr.count("INSERT INTO structures ")
			if forms != 1 || structures != 1 {
				t.Errorf("64 deliveries of %d bytes: %d statements for the forms, %d for the structures; want 1 each", size, forms, structures)
			}
			var n, withForms, bytes int64
			if err := s.rdb.QueryRow("SELECT count(*), count(f.bid), coalesce(sum(length(b.data)), 0) FROM bodies d LEFT JOIN forms f ON f.bid = d.bid LEFT JOIN blobs b ON b.bid = d.bid").Scan(&n, &withForms, &bytes); err != nil {
				t.Fatal(err)
			}
			if n != 64 || withForms != 64 {
				t.Errorf("%d bodies, %d with their forms; want 64, 64", n, withForms)
			}
		})
	}
}
