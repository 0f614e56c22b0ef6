package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/text/unicode/norm"

	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

func runExport(e *env, args []string) error {
	fs := newFlagSet(e, "export", "DEST", `
Copy the mail of a device's database into DEST, as Maildir (the default) or
mbox, so it can be read by other mail software or kept as a plain backup.
It reads the local database only, not the spool, and the daemon may keep
running. The database is encrypted with the user's key (docs/SECURITY.md
§8): pass --user-key as to the daemon, and its passphrase if it has one.

Maildir: one Maildir per mailbox, the hierarchy as folders (INBOX in
DEST/INBOX, "Archive/2024" in DEST/Archive/2024), each message in cur/ with
its flags in the file name (D draft, F flagged, P $Forwarded, R answered,
S seen, T deleted) and its internal date as the file's time. mbox: one
mboxrd file per mailbox (DEST/INBOX.mbox, DEST/Archive/2024.mbox); mbox has
no standard place for flags, so they are not kept. Mailboxes whose names
differ only by case (Foo and foo) or by the Unicode form of an accent
(Café composed and decomposed) are refused: a file system that ignores
case, or macOS's, would mix them.

Messages are written with LF line ends, as Unix mail software expects;
--crlf keeps every message's bytes exactly as stored. DEST must not exist
or be an empty folder.`, `
cspool export --db mail.db ~/mail-export
cspool export --db mail.db --format mbox --mailbox INBOX --mailbox Archive ~/mbox`)
	db := fs.String("db", "test.db", "local mail database `file`")
	userKey := fs.String("user-key", "user.sec", "the user's secret key `file` (the database is encrypted with it)")
	pass := addPassphraseFlag(fs, e)
	format := fs.String("format", "maildir", "`maildir` or mbox")
	crlf := fs.Bool("crlf", false, "keep CRLF line ends (every byte as stored)")
	var only []string
	fs.Var(listFunc(func(s string) error {
		only = append(only, mailstore.NormalizeName(s))
		return nil
	}), "mailbox", "export only this mailbox `NAME` (repeatable; default: all)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want 1 argument, DEST; got %d", fs.NArg())
	}
	var w exportWriter
	switch *format {
	case "maildir":
		w = &maildirWriter{}
	case "mbox":
		w = &mboxWriter{}
	default:
		return usagef("--format %q: want maildir or mbox", *format)
	}
	if _, err := os.Stat(*db); err != nil {
		return withHint(fmt.Errorf("opening %s: %w", *db, unwrapPath(err)), "pass the device's database with --db (the --db of cspool imap-server)")
	}
	var store *mailstore.Store
	var err error
	if st, _ := devicedb.Inspect(*db, nil); st == devicedb.Encrypted {
		k, err := deviceUserKey.loadSecret(pass, *userKey, "")
		if err != nil {
			return err
		}
		if store, err = openMailStore(e.stderr, *db, k, true); err != nil {
			return err
		}
	} else if store, err = mailstore.Open(*db, mimeform.Parser{}); err != nil {
		return err
	}
	defer store.Close()
	ctx := context.Background()
	boxes, err := store.Mailboxes(ctx)
	if err != nil {
		return err
	}
	for _, name := range only {
		if !slices.ContainsFunc(boxes, func(mb mailstore.Mailbox) bool { return mb.Name == name }) {
			return withHint(fmt.Errorf("no mailbox %q in %s", name, *db), "cspool status --db "+*db+" lists the mailboxes")
		}
	}
	dest := fs.Arg(0)
	// Every path first: two mailboxes whose paths differ only by case
	// would share one folder or file on a file system that ignores case
	// (macOS, Windows), and two that differ only by Unicode normalization
	// on macOS's, their messages mixed without a word.
	var todo []mailstore.Mailbox
	var paths []string
	byFolded := map[string]string{}
	for _, mb := range boxes {
		if len(only) > 0 && !slices.Contains(only, mb.Name) {
			continue
		}
		path, err := exportPath(dest, mb.Name, *format == "mbox")
		if err != nil {
			return err
		}
		key := foldPath(path)
		if other, ok := byFolded[key]; ok {
			hint := fmt.Sprintf("rename one of them in the mail client, or export each alone (--mailbox %q) into its own DEST", mb.Name)
			if foldCase(other) == foldCase(mb.Name) {
				return withHint(fmt.Errorf("mailboxes %q and %q differ only by case: a file system that ignores case (macOS, Windows) would write both into %s", other, mb.Name, path), hint)
			}
			// %+q: the two names look alike; their code points do not.
			return withHint(fmt.Errorf("mailboxes %+q and %+q differ only by Unicode normalization (an accented letter composed in one, decomposed in the other)%s: "+
				"macOS's file system takes them for one name and would write both into %s", other, mb.Name, caseToo(other, mb.Name), path), hint)
		}
		byFolded[key] = mb.Name
		todo = append(todo, mb)
		paths = append(paths, path)
	}
	if err := checkExportDest(dest); err != nil {
		return withHint(err, "export into a new folder")
	}
	total := 0
	for i, mb := range todo {
		path := paths[i]
		if err := w.begin(path); err != nil {
			return fmt.Errorf("exporting %q: %w", mb.Name, err)
		}
		n := 0
		err = store.Scan(ctx, mb.ID, mailstore.WantRaw, func(m *mailstore.Message) error {
			raw := m.Raw
			if !*crlf {
				raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
			}
			n++
			return w.add(m, raw)
		})
		if err == nil {
			err = w.end()
		}
		if err != nil {
			return fmt.Errorf("exporting %q: %w", mb.Name, err)
		}
		fmt.Fprintf(e.stdout, "%-30s %6d messages\n", mb.Name, n)
		total += n
	}
	fmt.Fprintf(e.stdout, "exported %d messages to %s (%s)\n", total, dest, *format)
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkExportDest makes dest, or accepts it if it is an empty folder: an
// export never mixes with, or overwrites, what is already there.
func checkExportDest(dest string) error {
	ents, err := os.ReadDir(dest)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dest, unwrapPath(err))
		}
		return nil
	case err != nil:
		return fmt.Errorf("%s: %w", dest, unwrapPath(err))
	case len(ents) > 0:
		return fmt.Errorf("%s is not empty", dest)
	}
	return nil
}

// exportPath maps a mailbox name onto a path below dest, one folder per
// level of the hierarchy. A level that could not be a folder name of its
// own ("", ".", "..", or Maildir's cur, new and tmp in any case, which
// would mix with the parent's messages) is written with every byte as %XX,
// and so is any "%" in a name: the mapping is one to one. For mbox, where
// a mailbox is the file NAME.mbox beside the folder NAME of its children,
// a folder level ending in ".mbox" in any case has that dot written as
// %2E, so that the children of "x.mbox" never need the folder that is the
// file of "x". Names differing only by case map to paths differing only by
// case (runExport refuses them).
func exportPath(dest, name string, mbox bool) (string, error) {
	parts := strings.Split(name, string(mailstore.Delim))
	for i, p := range parts {
		switch strings.ToLower(p) {
		case "", ".", "..", "cur", "new", "tmp":
			var b strings.Builder
			for j := 0; j < len(p); j++ {
				fmt.Fprintf(&b, "%%%02X", p[j])
			}
			if p == "" {
				b.WriteString("%")
			}
			parts[i] = b.String()
		default:
			if strings.ContainsRune(p, 0) {
				return "", fmt.Errorf("mailbox name %q holds a NUL byte", name)
			}
			parts[i] = strings.ReplaceAll(p, "%", "%25")
			if n := len(parts[i]) - len(".mbox"); mbox && i < len(parts)-1 && n >= 0 && strings.EqualFold(parts[i][n:], ".mbox") {
				parts[i] = parts[i][:n] + "%2E" + parts[i][n+1:]
			}
		}
	}
	return filepath.Join(append([]string{dest}, parts...)...), nil
}

// foldCase maps a path to the same string as every path differing from it
// only by case, as a file system that ignores case compares names.
func foldCase(path string) string { return strings.ToLower(strings.ToUpper(path)) }

// foldPath maps a path to the same string as every path differing from it
// only by case or by Unicode normalization (canonical equivalence: é as one
// code point or as e and a combining acute accent), as macOS's file
// systems compare names: APFS ignores normalization, HFS+ stores NFD.
// The form is NFD before and after folding, as Unicode's canonical caseless
// match is (section 3.13); bytes that are not UTF-8 are kept as they are.
func foldPath(path string) string { return norm.NFD.String(foldCase(norm.NFD.String(path))) }

// caseToo says so when a and b, equal under foldPath, also differ by case.
func caseToo(a, b string) string {
	if norm.NFD.String(a) != norm.NFD.String(b) {
		return " and by case"
	}
	return ""
}

// exportWriter writes one mailbox after another.
type exportWriter interface {
	begin(path string) error
	add(m *mailstore.Message, raw []byte) error
	end() error
}

// maildirWriter writes Maildirs (https://cr.yp.to/proto/maildir.html):
// each message is written in tmp/ and renamed into cur/.
type maildirWriter struct{ dir string }

func (w *maildirWriter) begin(path string) error {
	w.dir = path
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(path, sub), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// maildirFlags are the Maildir info letters, in the ASCII order the format
// requires.
var maildirFlags = []struct {
	letter byte
	flag   string
}{{'D', `\Draft`}, {'F', `\Flagged`}, {'P', `$Forwarded`}, {'R', `\Answered`}, {'S', `\Seen`}, {'T', `\Deleted`}}

func (w *maildirWriter) add(m *mailstore.Message, raw []byte) error {
	info := []byte(":2,")
	for _, f := range maildirFlags {
		if slices.ContainsFunc(m.Flags, func(g string) bool { return strings.EqualFold(g, f.flag) }) {
			info = append(info, f.letter)
		}
	}
	// Unique within the export: the message's id is.
	base := fmt.Sprintf("%d.%s.cspool", m.InternalDate.Unix(), m.ID)
	tmp := filepath.Join(w.dir, "tmp", base)
	if err := writeSynced(tmp, raw); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, m.InternalDate, m.InternalDate); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(w.dir, "cur", base+string(info)))
}

func (w *maildirWriter) end() error { return nil }

// mboxWriter writes mboxrd files: each message after a "From " line, with
// every line that starts with zero or more '>' and "From " quoted by one
// more '>', so that the quoting can be undone exactly.
type mboxWriter struct {
	f *os.File
	b bytes.Buffer
}

func (w *mboxWriter) begin(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path+".mbox", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	w.f = f
	return nil
}

func (w *mboxWriter) add(m *mailstore.Message, raw []byte) error {
	w.b.Reset()
	fmt.Fprintf(&w.b, "From MAILER-DAEMON %s\n", m.InternalDate.UTC().Format(time.ANSIC))
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line = raw[:i+1]
		}
		raw = raw[len(line):]
		if bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")) {
			w.b.WriteByte('>')
		}
		w.b.Write(line)
	}
	if n := w.b.Len(); w.b.Bytes()[n-1] != '\n' {
		w.b.WriteByte('\n')
	}
	w.b.WriteByte('\n')
	_, err := w.f.Write(w.b.Bytes())
	return err
}

func (w *mboxWriter) end() error {
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return err
	}
	return w.f.Close()
}

// writeSynced writes data to a new file at path and syncs it.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
