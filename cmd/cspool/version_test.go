package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
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
	checkVersionDoc(t)
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

// checkVersionDoc requires docs/OPERATING.md's "Upgrading" to show what
// `cspool version` prints: its first line of this shape (the commit and
// the Go release are the example's), the others as they are. They said
// device database 27 when the binary migrated to 29.
func checkVersionDoc(t *testing.T) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/OPERATING.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n### Upgrading\n")
	if !ok {
		t.Fatal(`docs/OPERATING.md has no "### Upgrading"`)
	}
	var shown []string
	for _, b := range codeBlocks(section) {
		if strings.HasPrefix(b, "$ cspool version\n") {
			shown = strings.Split(strings.TrimSuffix(strings.TrimPrefix(b, "$ cspool version\n"), "\n"), "\n")
			break
		}
	}
	got := strings.Split(strings.TrimSuffix(versionText(), "\n"), "\n")
	if len(shown) != len(got) {
		t.Fatalf("docs/OPERATING.md, Upgrading, shows cspool version printing %q, want %d lines like %q", shown, len(got), got)
	}
	first := regexp.MustCompile(`^cspool v0\.0\.0-\d{14}-[0-9a-f]{12}, built from commit [0-9a-f]{40} of \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, go[0-9.]+ [a-z0-9]+/[a-z0-9]+$`)
	if !first.MatchString(shown[0]) {
		t.Errorf("docs/OPERATING.md, Upgrading: the first line %q is not what a build from a commit prints", shown[0])
	}
	for i := 1; i < len(got); i++ {
		if shown[i] != got[i] {
			t.Errorf("docs/OPERATING.md, Upgrading, shows\n\t%s\nand cspool version prints\n\t%s", shown[i], got[i])
		}
	}
}
