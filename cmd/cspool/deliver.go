package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cspool/internal/api"
	"cspool/internal/deliver"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/userdb"
)

// Exit statuses of cspool deliver, from sysexits(3), so that a mail transfer
// agent running it as a delivery command tells temporary failures (retry)
// from permanent ones (bounce).
const (
	exUsage     = 64 // EX_USAGE: bad flags or arguments
	exDataErr   = 65 // EX_DATAERR: the message is too large, or sealed to a key the server does not have for the user
	exNoInput   = 66 // EX_NOINPUT: standard input could not be read
	exNoUser    = 67 // EX_NOUSER: no such user (here or on the server)
	exCantCreat = 73 // EX_CANTCREAT: the spool directory cannot be opened
	exTempFail  = 75 // EX_TEMPFAIL: try again later
	exProtocol  = 76 // EX_PROTOCOL: the server's answers are not the API's
	exNoPerm    = 77 // EX_NOPERM: key or users file problem, key refused
	exConfig    = 78 // EX_CONFIG: the server's TLS certificate is not trusted
)

func runDeliver(e *env, args []string) error {
	fs := newFlagSet(e, "deliver", "< MESSAGE", `
Deliver one message, read from standard input, into a user's log: the message
is sealed to the user's public key, signed with the spool key, and appended
either directly to the spool (safe while 'cspool server' runs on it): the
SQLite spool directory, or with --store postgres the PostgreSQL database at
--dsn (or $CSPOOL_DSN); or through a spool server's HTTP API. The spool key cannot decrypt what it
delivered. Any bytes are a message; they are stored byte for byte, after
the Return-Path and Delivered-To fields that --sender and --recipient put
in front of them (as a delivery agent records the envelope). An mbox
"From SENDER DATE" line in front, as Postfix's local(8) pipes a message
after its own Return-Path and Delivered-To, is dropped. A message in Unix
form (no CR anywhere, every line ended by a bare LF, as a mail transfer
agent pipes it) is stored with CRLF line ends, as it came over SMTP and as
IMAP serves a message; --max-size counts it as read.

The user's key comes from --user-key, or from the users file given with
--users (as 'cspool server' reads it). Straight into the store, give
--users, so that the name and the key are checked as the server checks them
(--user-key is taken there only for a SQLite spool in test mode, against
its registrations); through --spool-server the server checks both.

On success the log position is printed on standard output (nothing with
--quiet). Exit status follows sysexits(3), so a mail transfer agent can use
cspool deliver as its delivery command:
   0  delivered (the entry is durable)
  64  usage error (bad flags)
  65  data error: the message is larger than --max-size, or the server has
      another key for the user than the one it was sealed to (--user-key)
  66  standard input could not be read
  67  unknown user (invalid name, not in --users, or not a user of the server)
  73  the spool directory or database cannot be opened
  75  temporary failure, try again later: the spool is locked or full, the
      server or database is unreachable or busy (HTTP 503), the user's
      log is over its quota (HTTP 507, --quota), or a proxy sent the
      delivery twice and the server had refused the first copy
  76  the server's answers are not the API's (http:// for https://, or
      another program on that port)
  77  permission problem: a key or users file is missing, unreadable, too
      open or damaged, or the server refused the spool key
  78  the server's TLS certificate is not trusted (SSL_CERT_FILE,
      docs/TLS.md), expired, or not for that host name`, `
cspool deliver --user alice --user-key alice.pub --spool-key spool.sec < message.eml
cspool deliver --users /etc/cspool/users --user alice --spool-key spool.sec \
    --spool-server http://127.0.0.1:3999 --sender "$SENDER" --recipient "$RECIPIENT" < message.eml
cspool deliver --user alice --user-key alice.pub --spool-key spool.sec \
    --store postgres --dsn postgres://cspool@db.example.org/cspool < message.eml`)
	user := fs.String("user", "", "the recipient's user name (required)")
	pass := addPassphraseFlag(fs, e)
	userKey := fs.String("user-key", "", "the recipient's public key file (or use --users)")
	usersFile := fs.String("users", "", "users file to find the recipient's public key in, instead of --user-key")
	spoolKey := fs.String("spool-key", "", "the spool's secret key file (required)")
	previousKey := fs.String("previous-spool-key", "", "straight into the store: the public key `file` of the spool key the store runs with now (spool.pub), to replace it by --spool-key's, as the server's --previous-spool-key (docs/OPERATING.md, \"Replacing the spool key\")")
	spoolDir := fs.String("spool-dir", "./spool", "spool directory to append to directly")
	storeKind := fs.String("store", "sqlite", "the spool to append to directly: sqlite (--spool-dir) or postgres (--dsn)")
	dsn := fs.String("dsn", "", "PostgreSQL connection URL for --store postgres (default: $CSPOOL_DSN)")
	server := fs.String("spool-server", "", "append through the spool server at this URL (http://HOST:PORT) instead of --spool-dir")
	maxSize := fs.Int64("max-size", deliver.DefaultMaxMessageBytes, "largest message accepted, in bytes")
	quota := fs.Int64("quota", 0, "straight into the store: most bytes the user's log may hold for the message to be taken (exit 75 beyond), as the server's --quota; 0: none")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up (exit 75) after this long")
	quiet := fs.Bool("quiet", false, "print nothing on success")
	sender := fs.String("sender", "", "the envelope sender (MAIL FROM), \"\" or \"<>\" for the null sender: adds \"Return-Path: <SENDER>\" in front of the message (omit it when the mail transfer agent adds one, as Postfix's local(8) does)")
	recipient := fs.String("recipient", "", "the address the message was delivered to (RCPT TO): adds \"Delivered-To: ADDRESS\" in front of the message")
	if err := parseFlags(fs, args); err != nil {
		var u *usageError
		if errors.As(err, &u) {
			return deliverUsage("%s", u.msg)
		}
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		// The config file could not be read: a file it needs, as a key
		// or users file is.
		return &exitError{err, exNoPerm}
	}
	if *dsn == "" {
		*dsn = e.getenv("CSPOOL_DSN")
	}
	switch {
	case fs.NArg() != 0:
		return deliverUsage("unexpected argument %q: the message is read from standard input", fs.Arg(0))
	case *timeout <= 0:
		return deliverUsage("--timeout %v: want a duration above 0", *timeout)
	case *user == "":
		return deliverUsage("--user is required")
	case *spoolKey == "":
		return deliverUsage("--spool-key is required")
	case (*userKey == "") == (*usersFile == ""):
		return deliverUsage("give exactly one of --user-key and --users")
	case *maxSize <= 0:
		return deliverUsage("--max-size must be positive")
	case *quota < 0:
		return deliverUsage("--quota must be 0 (none) or more")
	case *quota > 0 && *server != "":
		return deliverUsage("--quota is for deliveries straight into the store: the server at --spool-server applies its own")
	case fs.cmdline["previous-spool-key"] && *server != "":
		return deliverUsage("--previous-spool-key is for deliveries straight into the store: the server at --spool-server replaces its key itself, started with --previous-spool-key")
	case *storeKind != "sqlite" && *storeKind != "postgres":
		return deliverUsage("--store %q: want sqlite or postgres", *storeKind)
	case *storeKind == "postgres" && *dsn == "" && *server == "":
		return deliverUsage("--store postgres needs --dsn (or CSPOOL_DSN)")
	}
	if *server != "" && plainBeyondLocalhost(*server) {
		warnPlainSpool(e.stderr, nil, *server, "a delivery answered as stored that never reached the spool is lost, "+
			"and cspool deliver exits 0 for it, so the mail transfer agent drops its copy")
	}
	if err := keys.CheckUserName(*user); err != nil {
		return &exitError{fmt.Errorf("--user: %w", err), exNoUser}
	}

	sk, err := deliverSpoolKey.loadSecret(pass, *spoolKey, *userKey)
	if err != nil {
		return &exitError{err, exNoPerm}
	}
	if *server != "" {
		// From the server's config file: the server at --spool-server
		// makes the replacement.
		*previousKey = ""
	}
	var previous keys.PublicKey
	if *previousKey != "" {
		if previous, err = loadPreviousSpoolKey(deliverPreviousSpoolKey, *previousKey, *spoolKey, sk.Public()); err != nil {
			return &exitError{err, exNoPerm}
		}
	}
	// keep holds the store to the spool key, replacing previous's with
	// --previous-spool-key.
	keep := func(st spool.Store, where string) error {
		if *previousKey == "" {
			return keepSpoolKey(st, sk.Public(), *spoolKey, where, "")
		}
		replaced, err := replaceSpoolKey(st, previous, sk.Public(), *previousKey, *spoolKey, where)
		if replaced && !*quiet {
			fmt.Fprintf(e.stderr, "cspool: the spool key with id %x (--previous-spool-key %s) of %s is replaced by the key with id %x (--spool-key %s); its logs are as they were\n",
				previous.KeyID(), *previousKey, where, sk.Public().KeyID(), *spoolKey)
		}
		return err
	}
	users, lines, err := loadDirectory(*user, *userKey, *usersFile, *spoolKey)
	if err != nil {
		return err
	}
	if err := refuseSpoolKey(users, lines, sk.Public(), *usersFile, *spoolKey); err != nil {
		return err
	}

	msg, err := io.ReadAll(io.LimitReader(e.stdin, *maxSize+1))
	if err != nil {
		return &exitError{fmt.Errorf("reading the message from standard input: %w", err), exNoInput}
	}
	if int64(len(msg)) > *maxSize {
		return &exitError{withHint(fmt.Errorf("message larger than %d bytes", *maxSize), "raise --max-size to accept it"), exDataErr}
	}
	msg = cutFromLine(msg)
	msg, crs := networkLineEnds(msg)
	// Either address may come in angle brackets, as in MAIL FROM and
	// RCPT TO ("<$SENDER>", "<$RECIPIENT>"): the fields write their own.
	unbracket := func(a string) string { return strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">") }
	env := deliver.Envelope{Recipient: unbracket(*recipient)}
	if fs.cmdline["sender"] {
		env.Sender, env.HasSender = unbracket(*sender), true
	}

	if *server == "" && *userKey != "" {
		if err := checkTestModeUser(*storeKind, *spoolDir, *user, users); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var log deliver.Appender
	if *server != "" {
		c, err := api.NewClient(*server, "", sk, nil)
		if err != nil {
			return deliverUsage("--spool-server: %v", err)
		}
		log = c.Deliveries()
	} else if *storeKind == "postgres" {
		st, err := openPostgres(ctx, *dsn)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := keep(st, "the PostgreSQL store "+pgstore.Redact(*dsn)); err != nil {
			return &exitError{err, exConfig}
		}
		if *usersFile != "" {
			if err := checkUsersLedger(ctx, *dsn, *usersFile, users, lines); err != nil {
				return err
			}
		}
		log = withinQuota(st, *quota)
	} else {
		st, err := openSpoolDir(*spoolDir)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := keep(st, *spoolDir); err != nil {
			return &exitError{err, exConfig}
		}
		log = withinQuota(st, *quota)
	}
	d := &deliver.Deliverer{Log: log, SpoolKey: sk, Users: users, MaxMessageBytes: *maxSize + int64(crs)}
	pos, err := d.DeliverEnvelope(ctx, *user, env, msg)
	if err != nil {
		return deliverFailure(err, *server, *usersFile)
	}
	if !*quiet {
		fmt.Fprintf(e.stdout, "delivered %d bytes to %s at log position %d\n", len(msg), *user, pos)
	}
	return nil
}

// cutFromLine drops the "From SENDER DATE" line a mail transfer agent
// puts in front of a message it pipes to a delivery command (Postfix's
// local(8) does, before its Return-Path and Delivered-To), as mbox
// delivery agents do: it is not a header field, and a client would show
// the message's header as broken. A first line "From" followed by
// blanks and a colon is an (obsolete) From field and stays.
func cutFromLine(msg []byte) []byte {
	rest, ok := bytes.CutPrefix(msg, []byte("From "))
	if !ok || bytes.HasPrefix(bytes.TrimLeft(rest, " \t"), []byte(":")) {
		return msg
	}
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		return rest[i+1:]
	}
	return msg
}

// networkLineEnds returns a message in Unix form (no CR anywhere, its lines
// ended by a bare LF, as a mail transfer agent pipes to a delivery command
// what it received with CRLF over SMTP: Postfix's local(8) for a
// mailbox_command, Maildir and mbox files for an import) with CRLF line
// ends, the form it had on the wire and the one IMAP serves (RFC 5322
// section 2.1), and how many CRs that added. Any other message is returned
// as it is: one with a CR anywhere is taken as written, whatever its mix.
// A message piped through local(8) was served over IMAP with bare LF line
// ends, unlike the same message delivered over LMTP
// (TestPostfixLocalRecipes).
func networkLineEnds(msg []byte) ([]byte, int) {
	n := bytes.Count(msg, []byte("\n"))
	if n == 0 || bytes.IndexByte(msg, '\r') >= 0 {
		return msg, 0
	}
	out := make([]byte, 0, len(msg)+n)
	for {
		i := bytes.IndexByte(msg, '\n')
		if i < 0 {
			return append(out, msg...), n
		}
		out = append(append(out, msg[:i]...), '\r', '\n')
		msg = msg[i+1:]
	}
}

// withinQuota appends to st within limit, if above zero.
func withinQuota(st interface {
	spool.Store
	spool.Quotas
}, limit int64) deliver.Appender {
	if limit > 0 {
		return spool.WithinQuota(st, limit)
	}
	return st
}

func deliverUsage(format string, a ...any) error {
	return &exitError{withHint(fmt.Errorf(format, a...), "run 'cspool deliver -h' for the flags"), exUsage}
}

// loadDirectory reads the one key deliver needs, from a key file or a users
// file (spoolKey is --spool-key's file, for the hint of a swap), and the
// line of the users file each user is on.
func loadDirectory(user, userKey, usersFile, spoolKey string) (deliver.StaticDirectory, keys.Lines, error) {
	if userKey != "" {
		k, err := deliverUserPub.loadPublic(userKey, spoolKey)
		if err != nil {
			return nil, nil, &exitError{err, exNoPerm}
		}
		return deliver.StaticDirectory{user: k}, nil, nil
	}
	u, lines, err := keys.LoadUsersLines(usersFile)
	if err != nil {
		return nil, nil, &exitError{withHint(err, usersFileHint(err, usersFile, "check --users: one \"NAME PUBLIC-KEY\" pair per line")), exNoPerm}
	}
	return deliver.StaticDirectory(u), lines, nil
}

// checkUsersLedger checks the users file against the user each key was
// last given by the servers of the PostgreSQL store at dsn
// (userdb.CheckLedger), as they check theirs, and records nothing: a
// file giving alice the key bob, still listed, was last given sealed
// alice's mail to bob's key.
func checkUsersLedger(ctx context.Context, dsn, usersFile string, users deliver.StaticDirectory, lines keys.Lines) error {
	pg, err := userdb.OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		return &exitError{withHint(err, "check --dsn"), exTempFail}
	}
	defer pg.Close()
	err = userdb.CheckLedger(ctx, pg, usersFile, keys.Users(users), lines)
	if errors.Is(err, userdb.ErrKeyMoved) {
		return &exitError{withHint(err, "give each user the key its own gen-keys printed, in --users as in the users file of every server of the store"), exNoPerm}
	}
	if err != nil {
		return &exitError{withHint(err, "check --dsn"), exTempFail}
	}
	return nil
}

// refuseSpoolKey refuses a users file (or --user-key) that gives a user the
// spool's public key, as the server refuses it at start: the mail delivered
// to that user would be sealed to the spool's key, readable by whoever
// holds the spool key.
func refuseSpoolKey(users deliver.StaticDirectory, lines keys.Lines, spool keys.PublicKey, usersFile, spoolKey string) error {
	for name, k := range users {
		if !k.Equal(spool) {
			continue
		}
		src := "--user-key"
		if usersFile != "" {
			src = fmt.Sprintf("users file %s: line %d", usersFile, lines[name])
		}
		return &exitError{withHint(fmt.Errorf("%s: user %q has the public key of --spool-key %s: %w", src, name, spoolKey, userdb.ErrRefusedKey),
			spoolKeyClashHint(name, spoolKey, usersFile == "")), exNoPerm}
	}
	return nil
}

// spoolKeyClashHint is the hint for a user given the public key of
// --spool-key spoolKey: either that file is the user's own secret key
// (the usual slip: the user's key pair at hand) or the user's line (or
// --user-key, byFlag) names the spool's public key.
func spoolKeyClashHint(user, spoolKey string, byFlag bool) string {
	other := "the users file gives " + user + " the spool's public key: put the user's own public key on its line (the one its gen-keys printed)"
	if byFlag {
		other = "--user-key is the spool's public key: give " + user + "'s own (the one its gen-keys wrote)"
	}
	return "either --spool-key " + spoolKey + " is " + user + "'s own secret key: give the spool's secret key (the one gen-keys made for the server); or " +
		other + ". Mail sealed to the spool's key would be readable by whoever holds the spool key"
}

// checkTestModeUser stands, for a delivery straight into the store with
// --user-key, for the check the server makes of every delivery (docs/API.md
// §4): the name must be a user and the key the one registered for it. Only
// a SQLite spool in test mode holds its users itself (DIR/test-users, which
// the server creates at start); there a name registered to another key
// exits 65 and a name nobody registered yet is taken, as the server takes
// it. Any other store's users are in the server's users file or table, so
// --user-key cannot be checked there: exit 64, to use --users.
func checkTestModeUser(storeKind, spoolDir, user string, dir deliver.StaticDirectory) error {
	reg := filepath.Join(spoolDir, userdb.TestUsersFile)
	hint := "give the server's users file with --users (the user's name and key are checked there), or deliver through the server with --spool-server"
	if storeKind != "sqlite" {
		return &exitError{withHint(errors.New("--user-key cannot be checked against the users of a PostgreSQL spool"), hint), exUsage}
	}
	if _, err := os.Stat(spoolDir); err != nil {
		return nil // openSpoolDir says what is wrong with it
	}
	registered, err := keys.LoadUsers(reg)
	if errors.Is(err, os.ErrNotExist) {
		return &exitError{withHint(fmt.Errorf("%s is not a spool in test mode (it has no %s): its server reads its users from a users file, against which --user-key cannot be checked",
			spoolDir, userdb.TestUsersFile), hint), exUsage}
	}
	if err != nil {
		return &exitError{withHint(err, "the spool's test mode registrations cannot be read: check "+reg), exNoPerm}
	}
	if k, ok := registered[user]; ok && !k.Equal(dir[user]) {
		return &exitError{withHint(fmt.Errorf("%s is registered to another key (id %x) than --user-key's (id %x) in %s: nothing stored",
			user, k.KeyID(), dir[user].KeyID(), reg), "pass the public key of the device that registered "+user), exDataErr}
	}
	return nil
}

// openSpoolDir opens an existing spool directory; a missing one is an error,
// so a mistyped --spool-dir does not start a new, empty spool.
func openSpoolDir(dir string) (*sqlitestore.Store, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, &exitError{withHint(fmt.Errorf("spool directory %s: %w", dir, err),
			"point --spool-dir at the spool directory cspool server runs with (its --spool-dir, made at its first start); "+
				"a directory made by hand would take the mail into a new, empty spool that no server reads"), exCantCreat}
	}
	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		code := exCantCreat
		if errors.Is(err, spool.ErrUnavailable) {
			code = exTempFail
		}
		hint := orNewerSchema(err, "check that this user may write to "+dir)
		if h := unwritableSpoolFile(dir); h != "" {
			hint = h
		}
		return nil, &exitError{withHint(err, hint), code}
	}
	return st, nil
}

// openPostgres opens the PostgreSQL store at dsn; an unreachable server is
// temporary (75), anything else (bad DSN, refused login, newer schema) 73.
func openPostgres(ctx context.Context, dsn string) (*pgstore.Store, error) {
	st, err := pgstore.Open(ctx, dsn, pgstore.Options{MaxConns: 2})
	if err != nil {
		code := exCantCreat
		if errors.Is(err, spool.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			code = exTempFail
		}
		hint := orNewerSchema(err, "check --dsn (postgres://USER@HOST:PORT/DATABASE)")
		if errors.Is(err, pgstore.ErrSharedSessions) {
			hint = sharedSessionsHint
		}
		return nil, &exitError{withHint(err, hint), code}
	}
	return st, nil
}

// deliverFailure maps a delivery error onto its exit status; usersFile is
// --users, where the recipient is looked up before anything is sent.
func deliverFailure(err error, server, usersFile string) error {
	var remote *api.Error
	switch {
	case errors.Is(err, keys.ErrUnknownUser):
		if server == "" || (usersFile != "" && !errors.As(err, &remote)) {
			// Looked up in --users, before anything was sent.
			hint := "the users file (--users) has no such user: check the name, or add the user to " + usersFile
			if server != "" {
				hint += ", a copy of the server's users file, kept in step with it"
			}
			return &exitError{withHint(err, hint), exNoUser}
		}
		return &exitError{withHint(err, "the server at "+server+" has no such user: check the name, or add the user to its users file"), exNoUser}
	case errors.Is(err, api.ErrWrongKey):
		return &exitError{withHint(err, "the server has another key for this user: deliver with --users and the server's users file, or with the user's current public key"), exDataErr}
	case errors.Is(err, api.ErrForbidden) && strings.Contains(err.Error(), "a delivery must be signed with the spool's key"):
		return &exitError{withHint(err, "pass the spool's secret key (spool.sec, the server's) as --spool-key, and the user's public key (USER.pub) as --user-key, or --users with the server's users file"), exConfig}
	case errors.Is(err, api.ErrReplayed):
		// A copy of this request reached the server first (a balancer
		// that retried it after a refusal) and was not appended: a copy
		// that was gets its answer (docs/API.md §4, "Appends made once").
		return &exitError{withHint(err, "a proxy or balancer on the way to "+server+" sent this delivery twice, and the server had refused the first copy: "+
			"temporary failure, try again later (with a new request, which is delivered once)"), exTempFail}
	case errors.Is(err, api.ErrUnauthenticated), errors.Is(err, api.ErrForbidden):
		return &exitError{withHint(err, "the server at "+server+" must be started with this spool key's public half; if its spool key was replaced (docs/OPERATING.md, \"Replacing the spool key\"), this is the old one: pass the new spool.sec as --spool-key"), exNoPerm}
	case errors.Is(err, api.ErrCertificate):
		return &exitError{withHint(err, api.Hint(err)), exConfig}
	case errors.Is(err, api.ErrProtocol):
		return &exitError{withHint(err, api.Hint(err)), exProtocol}
	case errors.As(err, &remote) && remote.Kind == api.ErrTransport && remote.Status == http.StatusOK:
		// The server's 200 came and its body did not: a proxy on the way
		// cut it short. The message is most likely in the log.
		return &exitError{withHint(err, "something on the way to "+server+" cut the spool's answer short (a proxy: check its log); "+
			"the message may be in the log, and may be delivered twice if retried"), exTempFail}
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{withHint(err, "the spool did not answer within --timeout; the message may be delivered twice if retried"), exTempFail}
	}
	switch deliver.KindOf(err) {
	case deliver.KindUnknownUser:
		return &exitError{err, exNoUser}
	case deliver.KindTooLarge:
		return &exitError{err, exDataErr}
	case deliver.KindOverQuota:
		return &exitError{withHint(err, "the user's log is over its quota: the message waits until the user deletes mail (retry later), or the quota is raised"), exTempFail}
	}
	return &exitError{withHint(err, "temporary failure: try again later"), exTempFail}
}
