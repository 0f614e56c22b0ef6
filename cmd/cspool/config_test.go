package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cspool.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testFlags is a flag set like a subcommand's, with --config.
func testFlags(t *testing.T, args []string, config string) (*flagSet, map[string]*string, *bool, error) {
	t.Helper()
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }, configFile: true}
	fs := newFlagSet(e, "test", "", "desc", "example")
	vals := map[string]*string{
		"addr":      fs.String("addr", "127.0.0.1", ""),
		"spool-dir": fs.String("spool-dir", "./spool", ""),
		"dsn":       fs.String("dsn", "", ""),
		"password":  fs.String("password", "x", ""),
	}
	debug := fs.Bool("debug", false, "")
	if config != "" {
		args = append([]string{"--config", writeConfig(t, config)}, args...)
	}
	err := parseFlags(fs, args)
	return fs, vals, debug, err
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	_, v, debug, err := testFlags(t, []string{"--addr", "0.0.0.0"}, `
# a comment
   # an indented comment

addr = 192.0.2.1
spool-dir=/var/lib/cspool
dsn = postgres://u:p#w@db/cspool?sslmode=require
password = "  spaced \"quoted\"  "
debug = true
`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"addr":      "0.0.0.0", // the command line wins
		"spool-dir": "/var/lib/cspool",
		"dsn":       "postgres://u:p#w@db/cspool?sslmode=require", // '#' inside a value is kept
		"password":  `  spaced "quoted"  `,
	}
	for k, w := range want {
		if *v[k] != w {
			t.Errorf("%s = %q, want %q", k, *v[k], w)
		}
	}
	if !*debug {
		t.Error("debug = true in the file did not set --debug")
	}
}

func TestConfigFileMistakes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ text, want string }{
		{"nonsense\n", ":1: want name = value"},
		{"addr = 1\n\naddr = 2\n", "addr given again (first on line 1)"},
		{"port = 1\n", `:1: unknown setting "port"`},
		{"--addr = 1\n", "not a flag name"},
		{"config = other.conf\n", "cannot name another"},
		{"debug = maybe\n", "debug"},
		{`password = "unterminated` + "\n", "bad quoted value"},
	} {
		_, _, _, err := testFlags(t, nil, c.text)
		var u *usageError
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &u) {
			t.Errorf("config %q: error %v, want a usage error containing %q", c.text, err, c.want)
		}
	}
	_, _, _, err := testFlags(t, []string{"--config", filepath.Join(t.TempDir(), "missing")}, "")
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing config file: %v, want an error naming it", err)
	}
}

// TestConfigFileSubcommands runs the real subcommands with a config file
// holding a bad value, so each stops at validation: the file reached their
// flags, and a command-line flag overrides it.
func TestConfigFileSubcommands(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		conf string
		want string
	}{
		{[]string{"server"}, "max-message-size = 0\n", "--max-message-size must be positive"},
		{[]string{"server"}, "store = mysql\n", `--store "mysql"`},
		{[]string{"server", "--store", "sqlite", "--max-message-size", "-1"}, "store = mysql\n", "--max-message-size must be positive"},
		{[]string{"imap-server"}, "user = -bad\n", "-bad"},
		{[]string{"server"}, "user = alice\n", `unknown setting "user" for cspool server`},
	} {
		var stdout, stderr bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
		args := append(slices.Clone(c.args), "--config", writeConfig(t, c.conf))
		code := run(e, args)
		if code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("cspool %v with %q: exit %d, stderr %q; want 2 and %q", c.args, c.conf, code, stderr.String(), c.want)
		}
	}
	var stderr bytes.Buffer
	e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	if code := run(e, []string{"gen-keys", "--config", "x"}); code != 2 {
		t.Errorf("gen-keys --config: exit %d, want 2 (it has no settings to keep in a file)", code)
	}
}

// TestConfigFileShared: the commands that work on a device's database read
// the daemon's config file as it is, and deliver the server's: each takes
// its own settings, passes over the service's others, and still refuses a
// name no command knows and a password others may read.
func TestConfigFileShared(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	daemon := `# the daemon's file, as in docs/systemd/README.md
user            = alice
user-key        = ` + dir + `/none.sec
user-public-key = ` + dir + `/none.pub
spool-key       = ` + dir + `/spool.pub
spool-server    = https://spool.example.org:3999
db              = ` + dir + `/mail.db
port            = 1143
status-addr     =
relay           = smtps://mail.example.org:465
identity        = alice@example.org
`
	conf := writeConfig(t, daemon)
	loose := writeMode(t, dir, "loose.conf", daemon+"password = hunter2\n", 0o644)
	server := writeConfig(t, "users = "+dir+"/users\nspool-dir = "+dir+"/spool\nlmtp = 127.0.0.1:2424\nlmtp-domains = example.org\nstore = mysql\n")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		// The key files in the file are the ones sync tries to read.
		{[]string{"sync", "--config", conf}, 77, dir + "/none.sec"},
		// A flag on the command line wins over the file.
		{[]string{"sync", "--config", conf, "--user", "-bad"}, 2, "-bad"},
		{[]string{"status", "--config", conf}, 1, "no cspool daemon answering for " + dir + "/mail.db"},
		// The hint starts the daemon the way status found it: from the file.
		{[]string{"status", "--config", conf}, 1, "start it with: cspool imap-server --config " + conf},
		{[]string{"export", "--config", conf, dir + "/out"}, 1, dir + "/mail.db"},
		{[]string{"recover", "--config", conf}, 77, dir + "/none.sec"},
		{[]string{"reindex", "--config", conf}, 1, dir + "/mail.db"},
		{[]string{"status", "--config", writeConfig(t, "db = x.db\nprot = 1143\n")}, 2,
			`unknown setting "prot" for cspool status (nor cspool imap-server)`},
		{[]string{"sync", "--config", loose}, 77, "holds a password and is open to other users (mode 0644)"},
		{[]string{"status", "--config", loose}, 77, "holds a password and is open to other users (mode 0644)"},
		// deliver reads the server's file: its store setting is taken.
		{[]string{"deliver", "--config", server, "--user", "alice", "--spool-key", "spool.sec"}, 64, `--store "mysql"`},
		{[]string{"deliver", "--config", writeConfig(t, "port = 3999\nmax-sise = 1\n")}, 64, `unknown setting "max-sise" for cspool deliver (nor cspool server)`},
	} {
		var stdout, stderr bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
		code := run(e, c.args)
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("cspool %v: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}

// flagNames runs `cspool SUB -h` and returns the flag names it lists.
func flagNames(t *testing.T, sub string) []string {
	t.Helper()
	var stdout bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	if code := run(e, []string{sub, "-h"}); code != 0 {
		t.Fatalf("cspool %s -h: exit %d", sub, code)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`).FindAllStringSubmatch(stdout.String(), -1) {
		names = append(names, m[1])
	}
	if len(names) < 3 {
		t.Fatalf("cspool %s -h lists %d flags:\n%s", sub, len(names), stdout.String())
	}
	return names
}

// TestConfigDocs keeps docs/CONFIG.md in step with the flags: every flag of
// server and imap-server has a row "| `name` |" in its section, and every
// row names a flag that exists.
func TestConfigDocs(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	parts := regexp.MustCompile(`(?m)^## `).Split(string(doc), -1)
	for _, p := range parts[1:] {
		title, body, _ := strings.Cut(p, "\n")
		sections[strings.TrimSpace(title)] = body
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)` \\|")
	for _, sub := range []string{"server", "imap-server"} {
		body, ok := sections["cspool "+sub]
		if !ok {
			t.Errorf("docs/CONFIG.md has no section \"## cspool %s\"", sub)
			continue
		}
		var documented []string
		for _, m := range row.FindAllStringSubmatch(body, -1) {
			documented = append(documented, m[1])
		}
		flags := flagNames(t, sub)
		for _, f := range flags {
			if f != "config" && !slices.Contains(documented, f) {
				t.Errorf("docs/CONFIG.md, cspool %s: flag %s is not documented (add a row \"| `%s` | ...\")", sub, f, f)
			}
		}
		for _, d := range documented {
			if !slices.Contains(flags, d) {
				t.Errorf("docs/CONFIG.md, cspool %s: %s is documented but is no flag", sub, d)
			}
		}
	}
}

// TestConfigByteOrderMark: a config file saved with a UTF-8 byte-order mark
// (as some editors do) was refused: unknown setting "\ufeffport".
func TestConfigByteOrderMark(t *testing.T) {
	got, err := parseConfig([]byte("\ufeffport = 1143\n"))
	if err != nil || len(got) != 1 || got[0].name != "port" || got[0].value != "1143" {
		t.Errorf("a config with a byte-order mark: %+v, %v", got, err)
	}
}

// TestConfigOverriddenNotice: a setting of the config file that the
// command line gives another value is said on stderr, naming the file's
// line and both values (a password's and a DSN's left out); one given the
// same value, or not on the command line, is not. Before, the file's line
// was passed over without a word.
func TestConfigOverriddenNotice(t *testing.T) {
	t.Parallel()
	fs, v, _, err := testFlags(t, []string{"--addr", "0.0.0.0", "--spool-dir", "/var/lib/cspool", "--password", "cmdline-secret",
		"--dsn", "postgres://u:cmdline@db/x"}, `addr = 192.0.2.1
spool-dir = /var/lib/cspool
password = file-secret
dsn = postgres://u:file@db/x
debug = true
`)
	if err != nil {
		t.Fatal(err)
	}
	if *v["addr"] != "0.0.0.0" {
		t.Fatalf("addr = %q, want the command line's", *v["addr"])
	}
	got := fs.stderr.(*bytes.Buffer).String()
	lines := strings.Split(strings.TrimSpace(got), "\n")
	want := []string{
		":1: addr = 192.0.2.1 is not used: --addr 0.0.0.0 on the command line wins",
		":3: password is not used: --password on the command line wins",
		":4: dsn is not used: --dsn on the command line wins",
	}
	if len(lines) != len(want) {
		t.Fatalf("stderr:\n%s\nwant %d notices", got, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], "cspool: notice: config file ") || !strings.HasSuffix(lines[i], w) {
			t.Errorf("notice %d: %q, want one ending %q", i+1, lines[i], w)
		}
	}
	for _, secret := range []string{"secret", "cmdline@", "file@"} {
		if strings.Contains(got, secret) {
			t.Errorf("the notices show %q:\n%s", secret, got)
		}
	}
}

// TestConfigOverriddenNoticeRelayPassword: the smarthost password of a
// device's config file, given another value on the command line, is
// named in the notice without either value, as password's and dsn's are.
// Before, the notice printed both passwords to standard error (the
// journal, under systemd).
func TestConfigOverriddenNoticeRelayPassword(t *testing.T) {
	t.Parallel()
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }, configFile: true}
	fs := newFlagSet(e, "device", "", "desc", "example")
	sf := addSendingFlags(fs)
	args := []string{"--config", writeConfig(t, "relay-user = mail@example.net\nrelay-password = file-relay-secret\nrelay = smtps://mail:url-relay-secret@mail.example.net\n"),
		"--relay-user", "other@example.net", "--relay-password", "cmdline-relay-secret", "--relay", "smtps://mail.example.net"}
	if err := parseFlags(fs, args); err != nil {
		t.Fatal(err)
	}
	if *sf.relayPassword != "cmdline-relay-secret" {
		t.Fatalf("relay-password = %q, want the command line's", *sf.relayPassword)
	}
	got := e.stderr.(*bytes.Buffer).String()
	if want := ":2: relay-password is not used: --relay-password on the command line wins"; !strings.Contains(got, want) {
		t.Errorf("stderr:\n%s\nwant a notice ending %q", got, want)
	}
	if want := ":1: relay-user = mail@example.net is not used: --relay-user other@example.net on the command line wins"; !strings.Contains(got, want) {
		t.Errorf("stderr:\n%s\nwant a notice ending %q", got, want)
	}
	if want := ":3: relay = 'smtps://…@mail.example.net' is not used: --relay smtps://mail.example.net on the command line wins"; !strings.Contains(got, want) {
		t.Errorf("stderr:\n%s\nwant a notice ending %q", got, want)
	}
	if strings.Contains(got, "relay-secret") {
		t.Errorf("the notices show the smarthost password:\n%s", got)
	}
}

// TestRepeatedSecretFlagHidden: a password or DSN given twice on the
// command line is a usage error naming the flag without its values, which
// the error would otherwise keep in the journal long after the command
// line is gone. Before, both values were printed.
func TestRepeatedSecretFlagHidden(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--password", "first-secret", "--password", "second-secret"},
		{"--dsn", "postgres://u:first-secret@db/x", "--dsn", "postgres://u:second-secret@db/x"},
		{"--addr", "smtps://u:first-secret@h", "--addr", "smtps://u:second-secret@h"},
	} {
		_, _, _, err := testFlags(t, args, "")
		if err == nil {
			t.Fatalf("%q: no error", args)
		}
		if want := args[0] + " given 2 times on the command line"; !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want it to say %q", args, err, want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error shows the values: %v", args, err)
		}
	}
	// Others still name both values.
	if _, _, _, err := testFlags(t, []string{"--addr", "a", "--addr", "b"}, ""); err == nil || !strings.Contains(err.Error(), `("a", "b")`) {
		t.Errorf("--addr twice: %v", err)
	}
}

// TestPlainSpoolWarningHidesPassword: the warning of a spool server
// reached without TLS, which cspool deliver prints before its client
// refuses a URL with a name and password, shows neither. Before, it
// printed the URL whole.
func TestPlainSpoolWarningHidesPassword(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	warnPlainSpool(&b, nil, "http://alice:s3cret-pw@192.0.2.1:3999", "forged")
	if !strings.Contains(b.String(), "http://…@192.0.2.1:3999") || strings.Contains(b.String(), "s3cret") {
		t.Errorf("the warning: %q, want the URL as http://…@192.0.2.1:3999", b.String())
	}
}
