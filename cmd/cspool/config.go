package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"cspool/internal/termtext"
)

// Configuration files (docs/CONFIG.md) give the long flags of a subcommand
// as "name = value" lines, so that a service can keep its settings in one
// file. The subcommands named by acceptsConfigFile have --config; those with
// a configService read that service's file too: each takes the settings
// that are its own flags and passes over the service's others, so that
// `cspool sync --config alice.conf` and `cspool status --config alice.conf`
// read the daemon's file as it is.
//
// Rules: blank lines and lines whose first non-blank character is '#' are
// ignored; every other line is NAME = VALUE, where NAME is a flag of the
// subcommand without dashes and VALUE runs to the end of the line, trimmed
// of blanks ('#' inside it is part of the value). A VALUE in double quotes
// is read as a Go string literal, for values with surrounding blanks or
// escapes. Boolean flags take true or false. A name given twice, an unknown
// name, and "config" itself are errors. Flags given on the command line win
// over the file. A file that sets a secret (secretSettings) to a non-empty
// value must be open to its owner only, or it is refused.

// configFlagUsage is the help text of --config.
const configFlagUsage = "read flags from this `file` of \"name = value\" lines (docs/CONFIG.md); command-line flags win"

// applyConfigFile sets, from the file at path, every flag of fs that the
// command line did not set. Mistakes in the file are usage errors naming the
// file and line. A setting the command line gives another value is said on
// stderr (if not nil): the command line wins, and a file edited for a
// service whose command line names that flag (docs/systemd's unit names
// its --spool-key) changed nothing without a word.
func applyConfigFile(fs *flag.FlagSet, path, service string, stderr io.Writer) error {
	data, info, err := readConfigFile(path)
	if err != nil {
		return withHint(fmt.Errorf("reading config file: %w", err), "--config names a file of \"name = value\" lines, see docs/CONFIG.md")
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	settings, err := parseConfig(data)
	if err != nil {
		return usagef("config file %s:%v", path, err)
	}
	for _, s := range settings {
		if secretSettings[s.name] && s.value != "" {
			if err := checkPrivateMode(path, "config file", info); err != nil {
				return withHint(err, fmt.Sprintf("run: chmod 600 %s, or leave %s out of it (imap-server reads --password-file or $%s)",
					shellQuote(path), s.name, passwordEnv))
			}
		}
	}
	for _, s := range settings {
		f := fs.Lookup(s.name)
		switch {
		case s.name == "config":
			return usagef("config file %s:%d: a config file cannot name another", path, s.line)
		case f == nil && service != "" && serviceFlags(service)[s.name]:
			// The service's own setting (a port, a password...).
			continue
		case f == nil && service != "":
			return usagef("config file %s:%d: unknown setting %q for %s (nor cspool %s)", path, s.line, s.name, fs.Name(), service)
		case f == nil:
			return usagef("config file %s:%d: unknown setting %q for %s", path, s.line, s.name, fs.Name())
		case onCommandLine[s.name]:
			switch v := f.Value.String(); {
			case stderr == nil || v == s.value:
			case valueHidden(s.name): // values not shown: a password, or a DSN holding one
				fmt.Fprintf(stderr, "cspool: notice: config file %s:%d: %s is not used: --%s on the command line wins\n",
					path, s.line, s.name, s.name)
			default:
				fmt.Fprintf(stderr, "cspool: notice: config file %s:%d: %s = %s is not used: --%s %s on the command line wins\n",
					path, s.line, s.name, shellQuote(termtext.WithoutUserinfo(s.value)), s.name, shellQuote(termtext.WithoutUserinfo(v)))
			}
			continue
		}
		if err := fs.Set(s.name, s.value); err != nil {
			return usagef("config file %s:%d: %s = %q: %v", path, s.line, s.name, s.value, err)
		}
	}
	return nil
}

// secretSettings are the settings a config file may hold only when no
// other user can read it.
var secretSettings = map[string]bool{"password": true}

// valueHidden reports whether the notice of a setting the command line
// overrides leaves its values out: a secret (password, relay-password, a
// passphrase), or a DSN, which may hold one. By the name's ending, so that
// a secret flag added later is hidden too.
func valueHidden(name string) bool {
	if secretSettings[name] {
		return true
	}
	for _, end := range []string{"password", "passphrase", "secret", "dsn"} {
		if strings.HasSuffix(name, end) {
			return true
		}
	}
	return false
}

// readConfigFile reads the file, and its mode from the same open file.
func readConfigFile(path string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(f)
	return data, info, err
}

// setting is one NAME = VALUE line.
type setting struct {
	name, value string
	line        int
}

// parseConfig reads the lines of a config file.
func parseConfig(data []byte) ([]setting, error) {
	// A byte-order mark, as some editors save UTF-8, is no part of the
	// first setting's name.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var out []setting
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			return nil, fmt.Errorf("%d: want name = value", n)
		}
		if strings.HasPrefix(name, "-") || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%d: %q is not a flag name (write it without dashes)", n, name)
		}
		if first, dup := seen[name]; dup {
			return nil, fmt.Errorf("%d: %s given again (first on line %d)", n, name, first)
		}
		seen[name] = n
		if strings.HasPrefix(value, `"`) {
			v, err := strconv.Unquote(value)
			if err != nil {
				return nil, fmt.Errorf("%d: %s: bad quoted value: %v", n, name, err)
			}
			value = v
		}
		out = append(out, setting{name: name, value: value, line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf(" reading: %w", err)
	}
	return out, nil
}

// acceptsConfigFile reports whether the subcommand has --config: every one
// that works with a service's settings. gen-keys (two file names and a
// comment) and quickstart (a demo of its own) do not.
func acceptsConfigFile(name string) bool {
	return name == "server" || name == "imap-server" || configService(name) != ""
}

// configService is the service whose config file the subcommand shares:
// the device daemon's for the commands that work on a device's database,
// the spool server's for deliver (spool-dir, store, dsn, users, spool-key
// mean the same there). "" for the services themselves and the rest.
func configService(name string) string {
	switch name {
	case "sync", "status", "export", "recover", "reindex":
		return "imap-server"
	case "deliver":
		return "server"
	}
	return ""
}

// serviceFlags lists the flags of the subcommand service, by building its
// FlagSet the way `cspool SERVICE -h` does (help goes nowhere).
func serviceFlags(service string) map[string]bool {
	var sets []*flag.FlagSet
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" },
		configFile: true, flagSets: &sets}
	for _, c := range commands() {
		if c.name == service && c.run != nil {
			c.run(e, []string{"-h"})
		}
	}
	names := map[string]bool{}
	for _, fs := range sets {
		fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	}
	return names
}
