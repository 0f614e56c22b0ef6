// Command cspool is the encrypted mail spool: one binary whose subcommands
// make keys, run the spool server, deliver mail into it, and run the
// per-device IMAP daemon.
//
// Exit status: 0 success; 1 runtime failure (the error is on stderr); 2 usage
// error (unknown subcommand, bad flag or argument, a config file's line); 75
// temporary (a port or the device's database in use); 77 a key, users or
// config file that cannot be used (missing, unreadable, too open, not a key,
// the wrong kind, a spool key the store or spool refuses); 78 --db names
// another program's database or another user's (docs/OPERATING.md, "Exit
// status"). `cspool deliver` follows sysexits(3) throughout, so an MTA can
// tell temporary from permanent failures: see its help.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/termtext"
)

// subcommand is one entry of the command table.
type subcommand struct {
	name    string
	summary string
	// run parses args with its own FlagSet and does the work.
	run func(env *env, args []string) error
}

// env is what a subcommand sees of the process: no globals.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// configFile: the running subcommand accepts --config.
	configFile bool
	// configService is the service whose config file the subcommand reads
	// (imap-server for the device's commands, server for deliver): the
	// file's settings for that service are not errors, they do not concern
	// this subcommand. Empty: the subcommand is the service, or has none.
	configService string
	// flagSets, when set, collects the FlagSets newFlagSet makes (to list
	// a subcommand's flags by running its -h).
	flagSets *[]*flag.FlagSet
	// privateFiles, when set, runs before a subcommand that holds a
	// device's database (privateUmask, set by main; tests that run
	// subcommands inside their own process leave it nil, the umask being
	// the whole process's).
	privateFiles func()
}

func commands() []subcommand {
	return []subcommand{
		{"gen-keys", "create a key pair (for a user or for the spool)", runGenKeys},
		{"passphrase", "add, change or remove the passphrase of a secret key file", runPassphrase},
		{"server", "run the spool server (HTTP API and LMTP)", runServer},
		{"deliver", "deliver one message from standard input into a user's log", runDeliver},
		{"imap-server", "run the device daemon: sync the log and serve it over IMAP", runIMAPServer},
		{"status", "show the running device daemon's sync state, folders and alarms", runStatus},
		{"sync", "bring the local mail database up to date with the spool, without IMAP", runSync},
		{"recover", "after the spool was restored from a backup: put back what this device holds", runRecover},
		{"reindex", "rebuild the search index of a device's database", runReindex},
		{"export", "copy a device's mail into Maildir or mbox", runExport},
		{"open-entry", "read the message of an entry a device kept because it was sealed to another key", runOpenEntry},
		{"quickstart", "try cspool on this machine: server, LMTP and IMAP in one process", runQuickstart},
		{"version", "print the commit this binary was built from and the formats it knows", runVersion},
		{"help", "show help for cspool or a subcommand", nil},
	}
}

func main() {
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, privateFiles: privateUmask}
	os.Exit(run(e, os.Args[1:]))
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// hintError carries a suggestion printed after the error.
type hintError struct {
	err  error
	hint string
}

func (h *hintError) Error() string { return h.err.Error() }
func (h *hintError) Unwrap() error { return h.err }

// freeSpaceHint is the hint for a store that cannot start on a full
// disk: free space on the file system that holds dir; then what waits.
func freeSpaceHint(dir, then string) string {
	return fmt.Sprintf("free space on the file system that holds %s (df %s), then start again: %s", dir, dir, then)
}

func withHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err, hint}
}

// exitError carries a specific exit status (sysexits for deliver).
type exitError struct {
	err  error
	code int
}

func (x *exitError) Error() string { return x.err.Error() }
func (x *exitError) Unwrap() error { return x.err }

func run(e *env, args []string) int {
	if len(args) == 0 {
		printUsage(e.stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	if name == "--version" || name == "-version" {
		name = "version"
	}
	if name == "help" || name == "-h" || name == "-help" || name == "--help" {
		if len(rest) > 0 && name == "help" {
			return run(e, []string{rest[0], "-h"})
		}
		printUsage(e.stdout)
		return 0
	}
	var cmd *subcommand
	for _, c := range commands() {
		if c.name == name && c.run != nil {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(e.stderr, "cspool: unknown subcommand %q (run 'cspool help' for the list)\n", name)
		return 2
	}
	if e.privateFiles != nil && holdsDeviceDatabase(cmd.name) {
		e.privateFiles()
	}
	ce := *e
	ce.configFile = acceptsConfigFile(cmd.name)
	ce.configService = configService(cmd.name)
	err := cmd.run(&ce, rest)
	return report(e.stderr, cmd.name, err)
}

// holdsDeviceDatabase: the subcommand opens a device's database (and its
// outbox) for writing.
func holdsDeviceDatabase(name string) bool {
	switch name {
	case "imap-server", "sync", "recover", "reindex", "quickstart":
		return true
	}
	return false
}

// privateUmask adds 077 to the process's umask, so that every file it
// creates from then on is its owner's alone. SQLite creates the -wal and
// -shm files of a device's database and of its outbox (again each time a
// clean close removed them) with mode 0666 less the umask: under a umask
// of 002 (a group per user, as many systems set it) or 000 the group or
// every local user could write them, and under 022 read them.
func privateUmask() {
	old := syscall.Umask(0o077)
	syscall.Umask(old | 0o077)
}

// report prints err the way users read it and returns the exit status.
func report(w io.Writer, name string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var u *usageError
	if errors.As(err, &u) {
		fmt.Fprintf(w, "cspool %s: %s (run 'cspool %s -h' for help)\n", name, u.msg, name)
		return 2
	}
	fmt.Fprintf(w, "cspool: error: %s\n", printableError(err))
	var h *hintError
	if errors.As(err, &h) && h.hint != "" {
		fmt.Fprintf(w, "cspool: hint: %s\n", h.hint)
	}
	return exitStatus(err)
}

// exitStatus is the status a failure exits with: an exitError's code, or
// the status of its kind for every command (docs/OPERATING.md, "Exit
// status"), so that a service manager or a script tells a mistake to fix
// (2, 77, 78: starting again fails again) from a temporary failure (75)
// and from any other (1).
func exitStatus(err error) int {
	var x *exitError
	if errors.As(err, &x) {
		return x.code
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE), errors.Is(err, errDatabaseBusy), errors.Is(err, spool.ErrUnavailable):
		// A port another program holds (a previous run still stopping),
		// a database another cspool process holds, a store that cannot
		// be reached or is locked: try again later.
		return exTempFail
	case errors.Is(err, devicedb.ErrForeign), errors.Is(err, mailstore.ErrNotMailstore), errors.Is(err, devicedb.ErrWrongKey),
		errors.Is(err, pgstore.ErrDSNRefused), errors.Is(err, pgstore.ErrSharedSessions):
		// --db names another program's database, or one made with
		// another user's key; --dsn cannot be parsed, or names a role or
		// database PostgreSQL refuses, or a pooler that shares sessions:
		// the configuration names the wrong thing.
		return exConfig
	}
	return 1
}

// printableError is err's text for the terminal: each line made printable
// (termtext.Printable) and the lines after the first indented. An error
// holds texts from elsewhere (a server's answer, the names of a certificate
// presented in the spool server's place, a smarthost's reply): an escape
// sequence there would act on the terminal, and a line end would start a
// "cspool: hint:" line of the sender's choosing. A tab is written as a
// space, and the tabs that indent a line after the first (PostgreSQL's
// driver lists each address it tried on a line of its own so) are dropped
// for the indent of the lines after the first.
func printableError(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		if i > 0 {
			l = strings.TrimLeft(l, "\t")
		}
		lines[i] = termtext.Printable(strings.ReplaceAll(l, "\t", " "))
	}
	return strings.Join(lines, "\n  ")
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "cspool: an encrypted, append-only mail spool with IMAP on your own devices.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: cspool SUBCOMMAND [flags] [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Subcommands:")
	cmds := commands()
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'cspool SUBCOMMAND -h' for the flags of one subcommand.")
	fmt.Fprintln(w, "Exit status: 0 success, 1 failure, 2 usage error, 75 temporary (a port or database in use),")
	fmt.Fprintln(w, "77 a key, users, config or password file that cannot be used, 78 a setting naming the wrong")
	fmt.Fprintln(w, "key or database (docs/OPERATING.md, \"Exit status\"); 'cspool deliver' uses sysexits codes throughout.")
}

// flagSet is a FlagSet with its help text.
type flagSet struct {
	*flag.FlagSet
	help   func()
	config *string // --config, for subcommands that accept a config file
	// service is env.configService.
	service string
	// cmdline holds the flags given on the command line (not by --config).
	cmdline map[string]bool
	// stderr takes the notice of a config file's setting that a flag on
	// the command line overrides.
	stderr io.Writer
}

// newFlagSet makes a FlagSet whose -h output lists usage, description, flags
// and an example, and whose errors become one-line usage errors.
func newFlagSet(e *env, name, args, desc, example string) *flagSet {
	fs := flag.NewFlagSet("cspool "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every parse error; help is printed
	// only for -h (see parseFlags), so errors stay one line.
	fs.Usage = func() {}
	help := func() {
		w := e.stdout
		fmt.Fprintf(w, "Usage: cspool %s [flags] %s\n\n", name, args)
		fmt.Fprintln(w, strings.TrimSpace(desc))
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Flags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Example:")
		for _, l := range strings.Split(strings.TrimSpace(example), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	f := &flagSet{FlagSet: fs, help: help, service: e.configService, stderr: e.stderr}
	if e.configFile {
		f.config = fs.String("config", "", configFlagUsage)
	}
	if e.flagSets != nil {
		*e.flagSets = append(*e.flagSets, fs)
	}
	return f
}

// parseFlags parses args, turning -h into flag.ErrHelp (after printing
// help) and other mistakes into usage errors.
func parseFlags(fs *flagSet, args []string) error {
	given := watchRepeats(fs.FlagSet)
	err := fs.Parse(args)
	given.restore()
	if errors.Is(err, flag.ErrHelp) {
		fs.help()
		return flag.ErrHelp
	}
	if err != nil {
		return &usageError{err.Error()}
	}
	if err := given.repeated(); err != nil {
		return err
	}
	fs.cmdline = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { fs.cmdline[f.Name] = true })
	if fs.config != nil && *fs.config != "" {
		err := applyConfigFile(fs.FlagSet, *fs.config, fs.service, fs.stderr)
		var u *usageError
		if err != nil && !errors.As(err, &u) {
			// A config file that cannot be read, or that others may
			// read while it holds a password: fix the file (77).
			return &exitError{err, exNoPerm}
		}
		return err
	}
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	safe := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r)
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !safe(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// newLogger is the log of a long-running subcommand, on standard error.
func newLogger(e *env, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}
