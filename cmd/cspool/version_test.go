package main

import (
	"bytes"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"cspool/internal/mailstore"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/sqlitestore"
)

// TestVersion: `cspool version` and `cspool --version` name the Go release
// and the schema versions this binary migrates to, which an operator
// compares before an upgrade; a binary built from a git checkout names
// its commit, and its servers' start lines carry it.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errb bytes.Buffer
		e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
		if code := run(e, args); code != 0 {
			t.Fatalf("%v: exit %d, %s", args, code, errb.String())
		}
		for _, want := range []string{
			runtime.Version(),
			"device database " + strconv.Itoa(mailstore.SchemaVersion),
			"SQLite " + strconv.Itoa(sqlitestore.SchemaVersion),
			"PostgreSQL " + strconv.Itoa(pgstore.LatestVersion()),
			"entry formats read: 2, 3 and 4; change commands: versions 1 and 2",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v printed %q, want it to contain %q", args, out.String(), want)
			}
		}
	}
	var errb bytes.Buffer
	if code := run(&env{stdout: &bytes.Buffer{}, stderr: &errb}, []string{"version", "x"}); code != 2 {
		t.Errorf("version with an argument: exit %d, want 2", code)
	}

	if testing.Short() {
		return
	}
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout (%v): the commit stamp is not checked", err)
	}
	bin := buildServerBinary(t) // with -buildvcs=auto, whatever GOFLAGS says
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	if !strings.Contains(string(out), "built from commit "+strings.TrimSpace(string(rev))) {
		if strings.Contains(string(out), "without a commit stamp") && isWorktree() {
			t.Skipf("go does not stamp a build in a git worktree: %s", out)
		}
		t.Errorf("version of a build from commit %s printed %q", strings.TrimSpace(string(rev)), out)
	}
}

// isWorktree: the current directory is in a linked git worktree, whose
// .git is a file; go build records no commit there.
func isWorktree() bool {
	gitDir, err1 := exec.Command("git", "rev-parse", "--git-dir").Output()
	common, err2 := exec.Command("git", "rev-parse", "--git-common-dir").Output()
	return err1 == nil && err2 == nil && strings.TrimSpace(string(gitDir)) != strings.TrimSpace(string(common))
}
