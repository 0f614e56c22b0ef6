package archtest

// The map, as data: docs/ARCHITECTURE.md explains every line of it, and
// TestRealGraph checks the code against it. A pattern is an import path;
// one ending in "/..." also matches every path below it.

// Floor is one level of the map: a package imports only packages on
// floors below its own (TestRealGraph), so nothing runs back up.
type Floor struct {
	Name     string
	Packages []string
}

// Floors lists every package of the module, lowest floor first. A package
// on no floor fails the test: put a new package here and in
// docs/ARCHITECTURE.md and the README's layout.
var Floors = []Floor{
	{"integrity", []string{
		"cspool/internal/chain",
	}},
	{"vocabulary", []string{
		"cspool/internal/keys",
		"cspool/internal/command",
		"cspool/internal/spool",
		"cspool/internal/devicedb",
		"cspool/internal/smtpdata",
		"cspool/internal/ownersock",
		"cspool/internal/loginguard",
		"cspool/internal/termtext",
		"cspool/internal/mimeform",
		"cspool/internal/pgsession",
		"cspool/internal/cores",
	}},
	{"sealing", []string{
		"cspool/internal/entry",
	}},
	{"state", []string{
		"cspool/internal/spool/sqlitestore",
		"cspool/internal/spool/pgstore",
		"cspool/internal/userdb",
		"cspool/internal/metrics",
		"cspool/internal/mailstore",
	}},
	{"roles", []string{
		"cspool/internal/api",
		"cspool/internal/deliver",
		"cspool/internal/syncer",
		"cspool/internal/submit",
	}},
	{"device services", []string{
		"cspool/internal/imapd",
		"cspool/internal/recovery",
		"cspool/internal/statuspage",
		"cspool/internal/outbox",
	}},
	{"test support", TestSupport},
	{"commands", []string{
		"cspool/cmd/...",
		"cspool/bench/...",
	}},
}

// TestSupport is the code that only tests and benchmark commands use: it
// may import anything below the commands, and no production package
// imports it (the rule "test support stays out of production").
var TestSupport = []string{
	"cspool/internal/archtest",
	"cspool/internal/devicetest",
	"cspool/internal/faults",
	"cspool/internal/hostile",
	"cspool/internal/imapstress",
	"cspool/internal/sendtest",
	"cspool/internal/smtpdata/smtpdatatest",
	"cspool/internal/spool/spooltest",
	"cspool/internal/spool/pgstore/pgtest",
	"cspool/internal/testproc",
	"cspool/bench/internal/rig",
}

// ServerSide is the spool server's code: the stores, the users, the start
// of their PostgreSQL sessions, the HTTP API (both halves live in package
// api: the client is what a device calls, and it needs nothing of the
// device either), delivery and the metrics. The server's subcommands
// share package main with the device's, so they are named by file.
var ServerSide = []string{
	"cspool/internal/spool/...",
	"cspool/internal/userdb",
	"cspool/internal/pgsession",
	"cspool/internal/api",
	"cspool/internal/deliver",
	"cspool/internal/metrics",
}

// ServerCommandFiles are the files of cmd/cspool that make up the server's
// subcommands (cspool server and cspool deliver).
var ServerCommandFiles = []string{"server*.go", "deliver.go"}

// DeviceSide is the device daemon's code.
var DeviceSide = []string{
	"cspool/internal/devicedb",
	"cspool/internal/mimeform",
	"cspool/internal/mailstore",
	"cspool/internal/syncer",
	"cspool/internal/recovery",
	"cspool/internal/imapd",
	"cspool/internal/submit",
	"cspool/internal/outbox",
	"cspool/internal/statuspage",
}

// protocolLibraries are the IMAP, SMTP and HTTP libraries.
var protocolLibraries = []string{
	"github.com/emersion/go-imap/...",
	"github.com/emersion/go-smtp/...",
	"github.com/emersion/go-sasl/...",
	"net/http/...",
	"net/smtp",
}

// ioLibraries are the standard library's packages that reach files, the
// network, processes or databases.
var ioLibraries = []string{
	"os",
	"os/...",
	"io/fs",
	"io/ioutil",
	"path/filepath",
	"net",
	"net/...",
	"database/...",
	"syscall",
	"log/...",
}

// Rules are the rules of the map beyond the floors. Each exception says
// why it is there; one that no longer matches anything fails the test, so
// the list only shrinks.
var Rules = []Rule{
	{
		Name:       "the server side depends on nothing of the device side",
		Packages:   ServerSide,
		Transitive: true,
		Forbid:     DeviceSide,
	},
	{
		Name:       "the server's subcommands depend on nothing of the device side",
		Packages:   []string{"cspool/cmd/cspool"},
		Files:      ServerCommandFiles,
		Transitive: true,
		Forbid:     DeviceSide,
	},
	{
		Name: "only the syncer opens entries",
		// What applies entries to a device's state is library code; a
		// command may open an entry to show it to a person.
		Packages: []string{"cspool/internal/..."},
		Symbol:   "cspool/internal/entry.Open",
		Only:     []string{"cspool/internal/syncer"},
		Except: []Exception{{
			From: "cspool/internal/recovery",
			To:   "cspool/internal/entry.Open",
			Why: "cspool recover reads and checks the restored log like a sync, but rebases onto it " +
				"in a transaction it rolls back, so it cannot go through the syncer's apply",
		}},
	},
	{
		Name:       "mailstore speaks no protocol",
		Packages:   []string{"cspool/internal/mailstore"},
		Transitive: true,
		Forbid:     protocolLibraries,
	},
	{
		Name:       "mailstore knows no message format",
		Packages:   []string{"cspool/internal/mailstore"},
		Transitive: true,
		Forbid:     []string{"github.com/emersion/go-message/...", "cspool/internal/mimeform"},
	},
	{
		Name:     "mimeform does no I/O",
		Packages: []string{"cspool/internal/mimeform"},
		Forbid:   ioLibraries,
	},
	{
		Name:     "chain does no I/O",
		Packages: []string{"cspool/internal/chain"},
		Forbid:   ioLibraries,
	},
	{
		Name:       "mailstore knows nothing of the spool",
		Packages:   []string{"cspool/internal/mailstore"},
		Transitive: true,
		Forbid:     []string{"cspool/internal/spool/..."},
	},
	{
		Name:     "imapd reaches the spool only through the syncer",
		Packages: []string{"cspool/internal/imapd"},
		Forbid: []string{
			"cspool/internal/spool/...",
			"cspool/internal/api",
			"cspool/internal/entry",
			"cspool/internal/deliver",
			"cspool/internal/userdb",
			"cspool/internal/recovery",
		},
	},
	{
		Name: "test support stays out of production",
		Packages: append(floorPackages("vocabulary", "sealing", "state", "roles", "device services"),
			"cspool/cmd/..."),
		Forbid: TestSupport,
	},
}

// floorPackages lists the packages of the named floors.
func floorPackages(names ...string) []string {
	var out []string
	for _, f := range Floors {
		for _, n := range names {
			if f.Name == n {
				out = append(out, f.Packages...)
			}
		}
	}
	return out
}
