package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"cspool/internal/keys"
)

// keyFlag describes a flag that names a key file, so that a key that
// cannot be loaded gets a hint about that flag: which flag the file
// probably belongs to when the kinds are swapped, and where the right key
// comes from. A key that must already exist (the user's key on a device,
// the spool's key on the delivery side) never gets "make a new one" as
// advice: a new key cannot open what was sealed to the old one.
type keyFlag struct {
	flag   string // e.g. "--user-key"
	secret bool   // the flag takes a secret key file
	// swap is the flag of the same command that takes the other kind, if
	// any: a wrong-kind key there is most likely a swap of the two.
	swap string
	// obtain says where this key comes from, for a missing file.
	obtain string
	// wrongKind, if set, says what to pass instead of a key of the other
	// kind that is not a swap; obtain otherwise.
	wrongKind string
	// quiet: no notice for a key without a passphrase (cspool deliver,
	// run by an MTA for every message, whose stderr ends up in bounces).
	quiet bool
	// risk says what anyone who copies the file can do while it has no
	// passphrase, for that notice; "": what a copy of the user's key
	// gives.
	risk string
}

// The key flags of each command.
var (
	deviceUserKey = keyFlag{flag: "--user-key", secret: true, swap: "--user-public-key",
		obtain:    "a device uses the user's existing key pair: copy user.sec and user.pub from another of the user's devices (a new key pair could not open the mail already sealed to the user); only a new user makes one, with 'cspool gen-keys user.sec user.pub'",
		wrongKind: "pass the user's secret key file, written together with the public one (user.sec next to user.pub); if this device has none, copy user.sec from another of the user's devices (no other key opens the mail sealed to the user)"}
	deviceUserPub = keyFlag{flag: "--user-public-key", secret: false, swap: "--user-key",
		obtain: "pass the public file made with the user's secret key (user.pub, next to user.sec)"}
	deviceSpoolPub = keyFlag{flag: "--spool-key", secret: false,
		obtain: "copy the spool's public key file (spool.pub) from the spool server's operator"}
	devicePreviousSpoolPub = keyFlag{flag: "--previous-spool-key", secret: false,
		obtain: "pass the spool's public key file (spool.pub) the spool server ran with before its key was replaced: the one this device synced with until then"}
	deliverSpoolKey = keyFlag{flag: "--spool-key", secret: true, swap: "--user-key", quiet: true,
		obtain: "pass the spool's secret key file, the one the spool server runs with (--spool-key of cspool server)"}
	deliverUserPub = keyFlag{flag: "--user-key", secret: false, swap: "--spool-key",
		obtain: "pass the recipient's public key file (the key registered for the user in the server's users file), or --users FILE"}
	serverPreviousSpoolKey = keyFlag{flag: "--previous-spool-key", secret: false,
		obtain: "pass the public file (spool.pub) of the spool key the store runs with now, the one --spool-key replaces"}
	deliverPreviousSpoolKey = keyFlag{flag: "--previous-spool-key", secret: false, swap: "--spool-key",
		obtain: "pass the public file (spool.pub) of the spool key the store runs with now, the one --spool-key replaces"}
	serverSpoolKey = keyFlag{flag: "--spool-key", secret: true,
		obtain: "pass the spool's secret key file; on a new installation make it with 'cspool gen-keys spool.sec spool.pub'",
		risk:   "sign deliveries that every device of this spool's users takes as this spool's (it opens no mail)"}
)

// hint returns what to try after err, a failure to load path for f;
// swapPath is the file given to f.swap ("" if none).
func (f keyFlag) hint(path, swapPath string, err error) string {
	var dangling *keys.DanglingLinkError
	kind, other := "public", "secret"
	if f.secret {
		kind, other = "secret", "public"
	}
	switch {
	case errors.Is(err, keys.ErrWrongKind) && f.swap != "" && holdsKind(swapPath, f.secret):
		return fmt.Sprintf("%s takes a %s key file, and %s holds a %s key: %s and %s look swapped; give each flag the other's file",
			f.flag, kind, path, other, f.flag, f.swap)
	case errors.Is(err, keys.ErrWrongKind) && !f.secret:
		return fmt.Sprintf("%s takes a public key file, and %s holds a secret key: pass the public file made with it, and keep the secret one private", f.flag, path)
	case errors.Is(err, keys.ErrWrongKind) && f.wrongKind != "":
		return fmt.Sprintf("%s takes a secret key file, and %s holds a public key: %s", f.flag, path, f.wrongKind)
	case errors.Is(err, keys.ErrWrongKind):
		return fmt.Sprintf("%s takes a secret key file, and %s holds a public key: %s", f.flag, path, f.obtain)
	case passphraseHint(path, err) != "":
		return passphraseHint(path, err)
	case errors.Is(err, keys.ErrTooOpen):
		return fmt.Sprintf("run: chmod 600 %s (and check who could have read it)", path)
	case errors.As(err, &dangling):
		return fmt.Sprintf("%s: %s is a symbolic link to %s, which is missing (a volume not mounted, a file moved or renamed?): "+
			"put the key back there, or give %s the key file itself; %s", f.flag, path, dangling.Target, f.flag, f.obtain)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s: no such file; %s", f.flag, f.obtain)
	case errors.Is(err, fs.ErrPermission):
		return f.permissionHint(path)
	case errors.Is(err, keys.ErrBadChecksum), errors.Is(err, keys.ErrMalformed), errors.Is(err, keys.ErrNoKey):
		return fmt.Sprintf("the key in %s is damaged: restore the file from a backup or another device (%s)", path, f.flag)
	}
	return fmt.Sprintf("check %s: %s", f.flag, f.obtain)
}

// permissionHint is the hint for a key file this process may not read: a
// key copied by root (sudo, scp as root) and left root's with mode 0600,
// which is right for its mode and wrong for its owner, or a folder on its
// path closed to the user the command runs as. The advice for a missing
// key (copy it from another device, or make one) would only mislead.
func (f keyFlag) permissionHint(path string) string {
	me := userName(os.Getuid())
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Sprintf("%s: a folder on the way to %s is closed to %s, whom this command runs as: open the folders to that user, or keep the key in one of theirs",
			f.flag, path, me)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("%s: %s may not be read by %s, whom this command runs as: give it to that user", f.flag, path, me)
	}
	chmod := ""
	if f.secret {
		chmod = fmt.Sprintf(" && chmod 600 %s", shellQuote(path))
	}
	return fmt.Sprintf("%s: %s belongs to %s and is mode %04o, and this command runs as %s, who may not read it (a key copied as root?): run, as root: chown %s %s%s",
		f.flag, path, userName(int(st.Uid)), info.Mode().Perm(), me, shellQuote(chownName(os.Getuid())), shellQuote(path), chmod)
}

// chownName is uid as chown takes it: its login name, or the number.
func chownName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// userName is the login name of uid, or "uid N" if it has none.
func userName(uid int) string {
	if n := chownName(uid); n != strconv.Itoa(uid) {
		return n
	}
	return fmt.Sprintf("uid %d", uid)
}

// holdsKind reports whether path holds a key of the kind a flag wants
// (a secret key if secret, else a public one): only then is a wrong-kind
// key on the other flag a swap of the two files. Nothing is decrypted.
func holdsKind(path string, secret bool) bool {
	if path == "" {
		return false
	}
	_, err := keys.LoadPublic(path)
	if secret {
		return errors.Is(err, keys.ErrWrongKind)
	}
	return err == nil
}

// loadSecret loads the secret key file path given to f, asking src for
// the passphrase if it is protected; an unprotected one gets a notice. A
// key that cannot be loaded exits 77 (EX_NOPERM), from every command.
// swapPath is the file given to f.swap ("" if none), for the hint.
func (f keyFlag) loadSecret(src *passphraseSource, path, swapPath string) (*keys.SecretKey, error) {
	sf, err := keys.LoadSecretWith(path, src.passphrase)
	var pf *passphraseFileError
	if errors.As(err, &pf) {
		return nil, &exitError{pf.hinted(err), exNoPerm}
	}
	if err != nil {
		return nil, &exitError{withHint(err, f.hint(path, swapPath, err)), exNoPerm}
	}
	if !sf.Protected && !f.quiet {
		noticeUnprotected(src.e, path, f.risk)
	}
	return sf.Key, nil
}

// loadPublic loads the public key file path given to f; swapPath as for
// loadSecret.
func (f keyFlag) loadPublic(path, swapPath string) (keys.PublicKey, error) {
	k, err := keys.LoadPublic(path)
	if err != nil {
		return keys.PublicKey{}, &exitError{withHint(err, f.hint(path, swapPath, err)), exNoPerm}
	}
	return k, nil
}
