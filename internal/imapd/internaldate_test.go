package imapd

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestInternalDateFourDigits: APPEND takes any date-time of the grammar,
// and "31-Dec-9999 23:59:59 -1259" is in the year 10000 in UTC, "01-Jan-0000
// 00:00:00 +0100" in the year -1. FETCH wrote them as " 1-Jan-10000
// 12:58:59 +0000" and "31-Dec--0001 23:00:00 +0000", which the grammar's
// four-digit year does not allow (RFC 9051 section 9): mbsync stopped the
// sync of the mailbox at them ("unable to parse INTERNALDATE format", exit
// 1, one message of six copied), imaplib's Internaldate2tuple gives None.
// Now they are stored as the nearest date INTERNALDATE can write, which
// FETCH, SEARCH and mbsync agree on; so is one that came with another year
// from the log, in any zone (wireDate).
func TestInternalDateFourDigits(t *testing.T) {
	t.Parallel()
	mbsync, d, dir, host, port := clientRig(t, "mbsync")
	rc := dialRaw(t, d.addr)
	rc.cmd("a1 LOGIN alice \"" + testPassword + "\"")
	if got := rc.until("a1 "); !strings.Contains(got, "a1 OK") {
		t.Fatalf("LOGIN: %s", got)
	}
	msg := "From: bob@example.org\r\nSubject: dated\r\n\r\nbody\r\n"
	for i, date := range []string{"31-Dec-9999 23:59:59 -1259", "01-Jan-0000 00:00:00 +0100"} {
		tag := fmt.Sprintf("p%d", i)
		rc.cmd(fmt.Sprintf("%s APPEND INBOX (\\Seen) \"%s\" {%d+}\r\n%s", tag, date, len(msg), msg))
		if got := rc.until(tag + " "); !strings.Contains(got, tag+" OK [APPENDUID ") {
			t.Fatalf("APPEND dated %s: %s", date, got)
		}
	}
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 ")
	rc.cmd("a3 FETCH 5:6 INTERNALDATE")
	got := rc.until("a3 ")
	dateTime := regexp.MustCompile(`INTERNALDATE "([ 0-9]{2}-[A-Z][a-z]{2}-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [-+][0-9]{4})"`)
	dates := dateTime.FindAllStringSubmatch(got, -1)
	if len(dates) != 2 {
		t.Fatalf("FETCH INTERNALDATE: %q, want two date-times with four-digit years", got)
	}
	for i, want := range []time.Time{lastWireDate, firstWireDate} {
		if at, err := time.Parse(internalDateLayout, dates[i][1]); err != nil || !at.Equal(want) {
			t.Errorf("message %d dated %q (%v), want %s", 5+i, dates[i][1], err, want)
		}
	}
	runRaw(t, rc, []rawCase{
		{"s1 SEARCH ON 31-Dec-9999", "* SEARCH 5\r\n"},
		{"s2 SEARCH BEFORE 2-Jan-0001", "* SEARCH 6\r\n"},
	})
	cfg := mbsyncConfig(host, port, dir, `
Channel sync
Far :far:
Near :near:
Patterns INBOX
Create Near
Sync Pull
CopyArrivalDate yes
SyncState *
`)
	if err := os.MkdirAll(filepath.Join(dir, "mail"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, mbsync, "-c", cfgPath, "-a")
	files, err := filepath.Glob(filepath.Join(dir, "mail", "INBOX", "*", "*"))
	if err != nil || len(files) != 6 {
		t.Errorf("mbsync copied %d messages of INBOX, want 6 (%v)", len(files), err)
	}
}

// TestWireDate: a date from the log that INTERNALDATE cannot write in its
// zone is written as the nearest it can, in UTC.
func TestWireDate(t *testing.T) {
	east := time.FixedZone("east", 13*3600)
	west := time.FixedZone("west", -12*3600)
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 12, 2, 15, 0, 0, 0, east), " 2-Dec-2026 15:00:00 +1300"},
		{time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).In(east), "31-Dec-9999 23:00:00 +0000"},
		{time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).In(west), "31-Dec-9999 11:00:00 -1200"},
		{time.UnixMilli(1 << 62), "31-Dec-9999 23:59:59 +0000"},
		{time.UnixMilli(-1 << 62), " 1-Jan-0001 00:00:00 +0000"},
		{time.Date(0, 12, 31, 23, 0, 0, 0, time.UTC), "31-Dec-0000 23:00:00 +0000"},
		{time.Date(0, 1, 1, 0, 30, 0, 0, time.UTC).In(west), " 1-Jan-0001 00:00:00 +0000"},
		{time.Date(1, 1, 1, 5, 0, 0, 0, time.UTC).In(west), "31-Dec-0000 17:00:00 -1200"},
	} {
		if got := wireDate(tc.in).Format(internalDateLayout); got != tc.want {
			t.Errorf("wireDate(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
