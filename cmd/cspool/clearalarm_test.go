package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSyncClearAlarm provokes a real integrity alarm (a second spool server
// whose log for the user is shorter than what the database applied: a
// rollback), then checks that it stays until cleared, that --clear-alarm
// against the same bad spool raises it again, and that --clear-alarm against
// the consistent spool clears it for good and catches up.
func TestSyncClearAlarm(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	good := newStatusSetup(t, bin)
	good.deliver(t, 3)

	// The other spool: same keys, its own directory and log.
	port := freePort(t)
	bad := *good
	bad.spoolURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	bad.server = startProc(t, "cspool server (other spool)", good.dir, good.env, bin,
		"server", "--port", fmt.Sprint(port), "--spool-key", "spool.sec", "--spool-dir", "other-spool")
	waitHealthy(t, bad.spoolURL, bad.server)
	bad.deliver(t, 1)

	db := filepath.Join(good.dir, "mail.db")
	syncWith := func(s *statusSetup, extra ...string) (int, string, string) {
		t.Helper()
		// --once unless the call gives its own (a flag given twice
		// with two values is refused).
		args := []string{"sync"}
		if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--once") }) {
			args = append(args, "--once")
		}
		args = append(args, s.keyFlags("mail.db")...)
		return runExit(t, good.dir, good.env, bin, append(args, extra...)...)
	}
	const rollback = "the spool's head 1 is behind position 3"

	if code, _, errOut := syncWith(good); code != 0 {
		t.Fatalf("first sync: exit %d, stderr %q", code, errOut)
	}
	code, out, errOut := syncWith(&bad)
	if code != 1 || !strings.Contains(errOut, "integrity alarm") || !strings.Contains(errOut, rollback) ||
		!strings.Contains(errOut, "cspool sync --clear-alarm") || !strings.Contains(errOut, "and --user (alice) the name this database has always synced") {
		t.Fatalf("sync with the rolled-back spool: exit %d, stderr %q; want 1, the alarm %q and a hint naming --clear-alarm and --user", code, errOut, rollback)
	}
	// The summary gives the head the spool gave, as the alarm does (it
	// said "head 3", the position, taken for the head).
	const behind = "stopped at position 3 (the spool's head 1 is behind it): "
	if !strings.HasPrefix(lastLine(out), behind) {
		t.Errorf("sync with the rolled-back spool ended with %q, want %q", lastLine(out), behind)
	}
	checkAlarms(t, db, rollback)

	// The alarm stays: the good spool, with more entries now, is not read.
	good.deliver(t, 2)
	for _, mode := range []string{"--once", "--once=false"} {
		code, out, errOut := syncWith(good, mode, "--progress", "100ms")
		if code != 1 || !strings.Contains(errOut, "integrity alarm: sync stopped: "+rollback) {
			t.Errorf("sync %s with a recorded alarm: exit %d, stderr %q; want 1 with the alarm", mode, code, errOut)
		}
		if !strings.HasPrefix(lastLine(out), "stopped at position 3 ") {
			t.Errorf("sync %s with a recorded alarm ended with %q, want stopped at position 3", mode, lastLine(out))
		}
	}
	checkAlarms(t, db, rollback)
	if got := storeInbox(t, db); got != 3 {
		t.Errorf("INBOX has %d messages while the alarm stands, want 3", got)
	}

	// Clearing repairs nothing: the same spool raises it again.
	code, out, errOut = syncWith(&bad, "--clear-alarm")
	if !strings.Contains(out, "clearing integrity alarm at position 3 (recorded ") || !strings.Contains(out, "): "+rollback) {
		t.Errorf("sync --clear-alarm did not print the alarm it cleared:\n%s", out)
	}
	if !strings.HasPrefix(lastLine(out), behind) {
		t.Errorf("sync --clear-alarm with the rolled-back spool ended with %q, want %q", lastLine(out), behind)
	}
	if code != 1 || !strings.Contains(errOut, rollback) {
		t.Errorf("sync --clear-alarm with the rolled-back spool: exit %d, stderr %q; want 1, the alarm again", code, errOut)
	}
	checkAlarms(t, db, rollback)

	// Cleared against the consistent spool: the checks pass and it catches up.
	code, out, errOut = syncWith(good, "--clear-alarm")
	if code != 0 {
		t.Fatalf("sync --clear-alarm with the good spool: exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "clearing integrity alarm at position 3 (recorded ") || !strings.HasSuffix(lines[0], rollback+", which this device already applied: the log was rolled back") {
		t.Errorf("sync --clear-alarm printed %q first, want the cleared alarm on one line", lines[0])
	}
	if !strings.HasPrefix(lastLine(out), "synced to position 5 (head 5)") {
		t.Errorf("sync --clear-alarm ended with %q, want synced to position 5", lastLine(out))
	}
	checkAlarms(t, db)
	if got := storeInbox(t, db); got != 5 {
		t.Errorf("INBOX has %d messages after clearing, want 5", got)
	}

	code, out, errOut = syncWith(good, "--clear-alarm")
	if code != 0 || !strings.HasPrefix(out, "no integrity alarm recorded\n") {
		t.Errorf("sync --clear-alarm without an alarm: exit %d, stdout %q, stderr %q; want 0, no integrity alarm recorded", code, out, errOut)
	}
}

// checkAlarms opens the database and requires its recorded alarms to be
// exactly one per detail given, each containing that text.
func checkAlarms(t *testing.T, path string, want ...string) {
	t.Helper()
	st, err := openDeviceDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	alarms, err := st.Alarms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ok := len(alarms) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.Contains(alarms[i].Detail, want[i])
	}
	if !ok {
		t.Errorf("recorded alarms %+v, want %d containing %q", alarms, len(want), want)
	}
}
