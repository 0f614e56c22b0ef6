package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/zalando/go-keyring"
	"golang.org/x/term"

	"cspool/internal/keys"
)

// credentialName is the systemd credential that holds a protected key's
// passphrase ($CREDENTIALS_DIRECTORY/cspool-passphrase, from
// LoadCredential= or LoadCredentialEncrypted=; docs/OPERATING.md).
const credentialName = "cspool-passphrase"

// keyringService names cspool's items in the desktop's Secret Service;
// each item's user name is the key file's absolute path.
const keyringService = "cspool"

// keyringWait bounds a Secret Service look-up (a locked keyring may ask
// the desktop user to unlock it).
const keyringWait = 60 * time.Second

// passphraseSource is how a command finds the passphrase of a protected
// secret key: --passphrase-file, else the systemd credential, else the
// desktop's Secret Service (where a session bus runs), else the terminal.
type passphraseSource struct {
	e    *env
	file *string
	// tty opens the terminal to ask on ("/dev/tty"; tests replace it).
	tty func() (*os.File, error)
}

func addPassphraseFlag(fs *flagSet, e *env) *passphraseSource {
	return &passphraseSource{
		e: e,
		file: fs.String("passphrase-file", "", "read the passphrase of a protected secret key from this `file` (its first line; "+
			"the file must be open to its owner only); default: $CREDENTIALS_DIRECTORY/"+credentialName+" under systemd, else asked on the terminal"),
		tty: openTTY,
	}
}

func openTTY() (*os.File, error) { return os.OpenFile("/dev/tty", os.O_RDWR, 0) }

// errNoTerminal: a protected key and no way to ask for its passphrase.
var errNoTerminal = errors.New("no --passphrase-file, no systemd credential " + credentialName + " and no terminal to ask on")

// passphrase returns the passphrase for the protected key file path.
func (s *passphraseSource) passphrase(path string) (string, error) {
	if *s.file != "" {
		pp, err := readSecretFile(*s.file, "passphrase file")
		if err != nil {
			return "", &passphraseFileError{err, "--passphrase-file"}
		}
		return pp, nil
	}
	if dir := s.e.getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		cred := filepath.Join(dir, credentialName)
		pp, err := readSecretFile(cred, "systemd credential")
		if err == nil {
			return pp, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", &passphraseFileError{err, "the systemd credential " + cred}
		}
	}
	if pp, ok := s.fromKeyring(path); ok {
		return pp, nil
	}
	tty, err := s.tty()
	if err != nil {
		return "", fmt.Errorf("%w: %w", keys.ErrNeedPassphrase, errNoTerminal)
	}
	defer tty.Close()
	return askTerminal(tty, fmt.Sprintf("Passphrase for %s: ", path))
}

// fromKeyring looks the passphrase of path up in the desktop's Secret
// Service, when a session bus runs; it says why it found none only when
// the service itself failed.
func (s *passphraseSource) fromKeyring(path string) (string, bool) {
	if s.e.getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
		return "", false
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", false
	}
	type answer struct {
		pp  string
		err error
	}
	got := make(chan answer, 1)
	go func() {
		pp, err := keyring.Get(keyringService, abs)
		got <- answer{pp, err}
	}()
	select {
	case a := <-got:
		if a.err != nil && !errors.Is(a.err, keyring.ErrNotFound) {
			fmt.Fprintf(s.e.stderr, "cspool: notice: the Secret Service did not answer for %s: %v\n", path, a.err)
		}
		return a.pp, a.err == nil && a.pp != ""
	case <-time.After(keyringWait):
		fmt.Fprintf(s.e.stderr, "cspool: notice: the Secret Service did not answer for %s within %v\n", path, keyringWait)
		return "", false
	}
}

// saveToKeyring stores (or, with pp empty, deletes) the passphrase of path
// in the desktop's Secret Service.
func saveToKeyring(path, pp string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if pp == "" {
		if err := keyring.Delete(keyringService, abs); err != nil && !errors.Is(err, keyring.ErrNotFound) {
			return fmt.Errorf("removing the passphrase of %s from the Secret Service: %w", path, err)
		}
		return nil
	}
	if err := keyring.Set(keyringService, abs, pp); err != nil {
		return withHint(fmt.Errorf("storing the passphrase of %s in the Secret Service: %w", path, err),
			"the key file is written; --keyring needs a desktop session with a Secret Service (GNOME Keyring, KWallet)")
	}
	return nil
}

// askTerminal reads one line from the terminal without echoing it.
func askTerminal(tty *os.File, prompt string) (string, error) {
	fmt.Fprint(tty, prompt)
	b, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return "", fmt.Errorf("reading the passphrase from the terminal: %w", err)
	}
	return string(b), nil
}

// newPassphrase asks for a new passphrase twice on the terminal, or reads
// it from file if one is given.
func (s *passphraseSource) newPassphrase(file, path string) (string, error) {
	if file != "" {
		return readSecretFile(file, "new passphrase file")
	}
	tty, err := s.tty()
	if err != nil {
		return "", withHint(errors.New("no terminal to ask for the new passphrase on"), "give it with --new-passphrase-file FILE")
	}
	defer tty.Close()
	a, err := askTerminal(tty, fmt.Sprintf("New passphrase for %s: ", path))
	if err != nil {
		return "", err
	}
	if a == "" {
		return "", errors.New("the new passphrase is empty")
	}
	b, err := askTerminal(tty, "Repeat it: ")
	if err != nil {
		return "", err
	}
	if a != b {
		return "", errors.New("the two passphrases differ; nothing was changed")
	}
	return a, nil
}

// passphraseHint says what to do about a protected key that did not open.
func passphraseHint(path string, err error) string {
	switch {
	case errors.Is(err, keys.ErrWrongPassphrase):
		return fmt.Sprintf("the passphrase does not open %s: check --passphrase-file or the systemd credential %s, or type it again; after 'cspool passphrase' the new one applies", path, credentialName)
	case errors.Is(err, errNoTerminal):
		return fmt.Sprintf("%s is protected by a passphrase: pass --passphrase-file FILE, or under systemd LoadCredentialEncrypted=%s:FILE (docs/OPERATING.md)", path, credentialName)
	}
	return ""
}

// unprotectedUserKey is what anyone who copies a user's secret key file
// without a passphrase can do.
const unprotectedUserKey = "read the mail sealed to it, and this device's database"

// noticeUnprotected tells the user that a secret key file has no
// passphrase, what a copy of it gives (risk; "": unprotectedUserKey), and
// how to give it one.
func noticeUnprotected(e *env, path, risk string) {
	fmt.Fprintf(e.stderr, "cspool: notice: %s has no passphrase: anyone who copies it can %s; add one with: cspool passphrase %s\n",
		path, cmp.Or(risk, unprotectedUserKey), shellQuote(path))
}

func runPassphrase(e *env, args []string) error {
	fs := newFlagSet(e, "passphrase", "KEYFILE", `
Add, change or remove the passphrase of a secret key file. The key itself
stays the same: its public key, the mail sealed to it and the device
database keyed with it are unchanged.

A protected file holds the key encrypted with age's scrypt recipient
(docs/FORMAT.md §1); every command that loads it asks for the passphrase
on the terminal, or reads it from --passphrase-file, from the systemd
credential `+credentialName+` ($CREDENTIALS_DIRECTORY) or from the desktop's
Secret Service (--keyring stores it there). The current passphrase, if any,
is found the same way; the new one is asked twice on
the terminal, or read from --new-passphrase-file. The file is replaced
atomically.`, `
cspool passphrase user.sec
cspool passphrase --remove user.sec
cspool passphrase --passphrase-file old.txt --new-passphrase-file new.txt user.sec`)
	src := addPassphraseFlag(fs, e)
	newFile := fs.String("new-passphrase-file", "", "read the new passphrase from this `file` instead of asking twice on the terminal")
	remove := fs.Bool("remove", false, "remove the passphrase: write the key unprotected")
	toKeyring := fs.Bool("keyring", false, "also store the new passphrase in the desktop's Secret Service (removed from it with --remove), where every command finds it")
	workFactor := fs.Int("work-factor", keys.DefaultWorkFactor, "scrypt work factor (log2 N) for the new passphrase: 18 takes about a second")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want 1 argument, KEYFILE; got %d", fs.NArg())
	}
	if *remove && *newFile != "" {
		return usagef("--remove and --new-passphrase-file exclude each other")
	}
	path := fs.Arg(0)
	f, err := keys.LoadSecretWith(path, src.passphrase)
	if err != nil {
		if h := passphraseHint(path, err); h != "" {
			return withHint(err, h)
		}
		return withHint(err, "pass a secret key file made by cspool gen-keys")
	}
	if *remove {
		if !f.Protected {
			fmt.Fprintf(e.stdout, "%s has no passphrase; nothing changed\n", path)
			return nil
		}
		if err := keys.RewriteSecret(path, f.Key, "", 0); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed the passphrase of %s\n", path)
		if *toKeyring {
			return saveToKeyring(path, "")
		}
		return nil
	}
	pp, err := src.newPassphrase(*newFile, path)
	if err != nil {
		return err
	}
	if err := keys.RewriteSecret(path, f.Key, pp, *workFactor); err != nil {
		return err
	}
	verb := "added a passphrase to"
	if f.Protected {
		verb = "changed the passphrase of"
	}
	fmt.Fprintf(e.stdout, "%s %s\n", verb, path)
	if *toKeyring {
		if err := saveToKeyring(path, pp); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "stored it in the Secret Service (service %s, user %s)\n", keyringService, path)
	}
	return nil
}

// passphraseFileError is a --passphrase-file, or the systemd credential,
// that could not be read: the mistake is in that file, not in the key
// file, whose hint would send the user after the key.
type passphraseFileError struct {
	err  error
	what string // "--passphrase-file", or "the systemd credential PATH"
}

func (e *passphraseFileError) Error() string { return e.err.Error() }
func (e *passphraseFileError) Unwrap() error { return e.err }

// hinted returns err with the passphrase file's own hint.
func (e *passphraseFileError) hinted(err error) error {
	var h *hintError
	if errors.As(e.err, &h) {
		return withHint(err, h.hint)
	}
	if errors.Is(e.err, os.ErrNotExist) {
		return withHint(err, "--passphrase-file: no such file; name the file whose first line is the key's passphrase (mode 0600), or leave the flag out to be asked on the terminal")
	}
	return withHint(err, "check "+e.what+": it must be a file whose first line is the key's passphrase, open to its owner only (mode 0600)")
}
