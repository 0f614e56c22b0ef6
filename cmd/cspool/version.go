package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/sqlitestore"
)

// runVersion prints what an operator compares across machines before an
// upgrade (docs/OPERATING.md, "Upgrading"): the commit the binary was built
// from, and the formats and schema versions it reads and writes.
func runVersion(e *env, args []string) error {
	fs := newFlagSet(e, "version", "", `
Print the version of this cspool binary: the commit it was built from, the
Go release, and the entry formats and schema versions it knows. Compare it
on every machine before an upgrade (docs/OPERATING.md, "Upgrading").`, "cspool version")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprint(e.stdout, versionText())
	return nil
}

// buildStamp is what the build recorded of its source: the main
// module's version ("(devel)" for a build from a checkout), the commit,
// its time, and whether the tree had uncommitted changes.
func buildStamp() (mod, rev, when string, modified bool) {
	mod = "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			mod = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	return mod, rev, when, modified
}

// shortVersion is the version in a start line of the log: the commit's
// first 12 digits (with "+changes" for a tree that had uncommitted
// changes), or the module's version when the build recorded no commit.
func shortVersion() string {
	mod, rev, _, modified := buildStamp()
	if rev == "" {
		return mod
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "+changes"
	}
	return rev
}

// versionText is the text `cspool version` prints. The commit comes from
// the build's VCS stamp (go build in a git checkout records it; go run and
// builds outside a checkout do not, and then it says so).
func versionText() string {
	mod, rev, when, modified := buildStamp()
	built := "built without a commit stamp (go run, a build outside a git checkout, or -buildvcs=false)"
	if rev != "" {
		built = "built from commit " + rev
		if when != "" {
			built += " of " + when
		}
		if modified {
			built += ", with uncommitted changes"
		}
	}
	return fmt.Sprintf("cspool %s, %s, %s %s/%s\n"+
		"entry formats read: %d, %d and %d; change commands: versions %d and %d; spool API: v1\n"+
		"schema versions: device database %d, spool store SQLite %d, PostgreSQL %d\n",
		mod, built, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		entry.Version, entry.Version3, entry.Version4, command.Version, command.Version2,
		mailstore.SchemaVersion, sqlitestore.SchemaVersion, pgstore.LatestVersion())
}
