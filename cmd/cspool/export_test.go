package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// exportFixture is a device database with messages of awkward shapes in
// mailboxes of awkward names, and the bytes each message must come back as;
// newExportFixture adds the extra mailboxes it is given, a message each.
type exportFixture struct {
	db       string
	messages map[string][][]byte // mailbox name -> raw messages in UID order
	flags    map[string][]string // first 20 bytes of a message -> its Maildir letters
}

func newExportFixture(t *testing.T, extra ...string) *exportFixture {
	t.Helper()
	dir := t.TempDir()
	f := &exportFixture{db: filepath.Join(dir, "mail.db"), messages: map[string][][]byte{}, flags: map[string][]string{}}
	s, err := mailstore.Open(f.db, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pos uint64
	id := func() command.ID {
		sum := sha256.Sum256(fmt.Appendf(nil, "export entry %d", pos))
		return command.ID(sum[:16])
	}
	apply := func(c *command.Command) command.ID {
		pos++
		e := mailstore.Entry{Pos: pos, ID: id(), Author: mailstore.AuthorUser, Cmd: c}
		if _, err := s.Apply(context.Background(), []mailstore.Entry{e}, pos); err != nil {
			t.Fatalf("applying %v: %v", c.Kind, err)
		}
		return e.ID
	}
	date := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC).UnixMilli()
	inbox := [][]byte{
		[]byte("From: a@example.org\r\nSubject: plain\r\n\r\nHello.\r\n"),
		[]byte("Subject: from lines\r\n\r\nFrom here on\r\n>From there\r\n>>From quoted twice\r\nFrom\r\nno newline at the end"),
		[]byte("no header at all \x00\xff\r with a bare CR\nand a bare LF\r\n"),
	}
	var ids []command.ID
	for _, m := range inbox {
		ids = append(ids, apply(&command.Command{Kind: command.Deliver, Date: date, Body: m}))
	}
	apply(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`, `\Answered`, "$Forwarded", "custom"}, IDs: ids[:1]})
	f.messages[mailstore.InboxName] = inbox
	f.flags[string(inbox[0][:20])] = []string{"P", "R", "S"}
	// "dots.in.name.mbox/child" has a parent whose name is the mbox file
	// of "dots.in.name".
	for _, name := range append([]string{"Archive/2024", "Archive/cur", "100% done", "dots.in.name", "dots.in.name.mbox/child"}, extra...) {
		apply(&command.Command{Kind: command.CreateMailbox, Mailbox: name})
		body := []byte("Subject: in " + name + "\r\n\r\nbody\r\n")
		apply(&command.Command{Kind: command.Append, Mailbox: name, Date: date, Flags: []string{`\Flagged`, `\Draft`}, Body: body})
		f.messages[name] = [][]byte{body}
		f.flags[string(body[:20])] = []string{"D", "F"}
	}
	return f
}

func runExportCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
	code := run(e, append([]string{"export"}, args...))
	return code, out.String()
}

// TestExportMaildir exports every mailbox, reads each Maildir back, and
// finds every message byte for byte (with --crlf) and every flag.
func TestExportMaildir(t *testing.T) {
	t.Parallel()
	f := newExportFixture(t)
	dest := filepath.Join(t.TempDir(), "out")
	if code, out := runExportCmd(t, "--db", f.db, "--crlf", dest); code != 0 {
		t.Fatalf("export: exit %d: %s", code, out)
	}
	paths := map[string]string{
		mailstore.InboxName: "INBOX", "Archive/2024": "Archive/2024", "Archive/cur": "Archive/%63%75%72",
		"100% done": "100%25 done", "dots.in.name": "dots.in.name",
		"dots.in.name.mbox/child": "dots.in.name.mbox/child",
	}
	for name, want := range f.messages {
		files, err := filepath.Glob(filepath.Join(dest, paths[name], "cur", "*"))
		if err != nil || len(files) != len(want) {
			t.Fatalf("mailbox %q: %d files in %s/cur (%v), want %d", name, len(files), paths[name], err, len(want))
		}
		var got [][]byte
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b)
			info := p[strings.LastIndex(p, ":2,")+3:]
			if w := strings.Join(f.flags[string(b[:min(20, len(b))])], ""); info != w {
				t.Errorf("%s: flags %q, want %q", p, info, w)
			}
			st, err := os.Stat(p)
			if err != nil || st.ModTime().UTC().Year() != 2026 {
				t.Errorf("%s: time %v, want the internal date in 2026 (%v)", p, st.ModTime(), err)
			}
		}
		slices.SortFunc(got, bytes.Compare)
		slices.SortFunc(want, bytes.Compare)
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("mailbox %q: exported %q, want %q", name, got[i], want[i])
			}
		}
	}
	// A second export into the same, now full, folder is refused.
	if code, out := runExportCmd(t, "--db", f.db, dest); code != 1 || !strings.Contains(out, "not empty") {
		t.Errorf("export into a full folder: exit %d, %q; want 1 and 'not empty'", code, out)
	}
	// Python's mailbox module reads the LF export as Maildir, flags included.
	py := needTool(t, "python3", "python3")
	lf := filepath.Join(t.TempDir(), "lf")
	if code, out := runExportCmd(t, "--db", f.db, lf); code != 0 {
		t.Fatalf("export: exit %d: %s", code, out)
	}
	script := `import mailbox, sys
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
for key in sorted(md.keys()):
    m = md[key]
    print(repr(m.get_flags()), repr(m.get("Subject")), len(md.get_bytes(key)))
`
	out, err := exec.Command(py, "-c", script, filepath.Join(lf, "INBOX")).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 reading the Maildir: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !slices.Contains(lines, fmt.Sprintf("'PRS' 'plain' %d", len(inbox0LF(f)))) {
		t.Errorf("python3 read INBOX as:\n%s\nwant 3 messages, the first with flags PRS, %d bytes", out, len(inbox0LF(f)))
	}
}

func inbox0LF(f *exportFixture) []byte {
	return bytes.ReplaceAll(f.messages[mailstore.InboxName][0], []byte("\r\n"), []byte("\n"))
}

// TestExportMbox exports two mailboxes as mboxrd, checks that Python's
// mailbox module sees each message as one, and that undoing the quoting
// gives back every message.
func TestExportMbox(t *testing.T) {
	t.Parallel()
	f := newExportFixture(t)
	dest := filepath.Join(t.TempDir(), "out")
	code, out := runExportCmd(t, "--db", f.db, "--format", "mbox", "--mailbox", "inbox", "--mailbox", "Archive/2024", dest)
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dest, "dots.in.name.mbox")); err == nil {
		t.Errorf("a mailbox not asked for was exported")
	}
	b, err := os.ReadFile(filepath.Join(dest, "INBOX.mbox"))
	if err != nil {
		t.Fatal(err)
	}
	// Undo mboxrd: split at "From " lines, drop one '>' from quoted ones.
	var got [][]byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		switch {
		case bytes.HasPrefix(line, []byte("From ")):
			got = append(got, nil)
			continue
		case bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")):
			line = line[1:]
		}
		got[len(got)-1] = append(got[len(got)-1], line...)
	}
	want := f.messages[mailstore.InboxName]
	if len(got) != len(want) {
		t.Fatalf("INBOX.mbox holds %d messages, want %d:\n%s", len(got), len(want), b)
	}
	for i, w := range want {
		w = bytes.ReplaceAll(w, []byte("\r\n"), []byte("\n"))
		if !bytes.HasSuffix(w, []byte("\n")) {
			w = append(w, '\n')
		}
		w = append(w, '\n') // the blank line before the next "From "
		if !bytes.Equal(got[i], w) {
			t.Errorf("message %d: %q, want %q", i, got[i], w)
		}
	}
	py := needTool(t, "python3", "python3")
	script := `import mailbox, sys
print(len(mailbox.mbox(sys.argv[1], create=False)), len(mailbox.mbox(sys.argv[2], create=False)))`
	pout, err := exec.Command(py, "-c", script, filepath.Join(dest, "INBOX.mbox"), filepath.Join(dest, "Archive", "2024.mbox")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(pout)) != "3 1" {
		t.Errorf("python3 counts %q (%v), want \"3 1\"", pout, err)
	}
	// Every mailbox: the file of "dots.in.name" is dots.in.name.mbox, so
	// the folder of the children of "dots.in.name.mbox" is another; it was
	// the same, and the export stopped with "mkdir ...: not a directory".
	all := filepath.Join(t.TempDir(), "all")
	if code, out := runExportCmd(t, "--db", f.db, "--format", "mbox", all); code != 0 {
		t.Fatalf("export of every mailbox: exit %d: %s", code, out)
	}
	for name, file := range map[string]string{
		"dots.in.name":            "dots.in.name.mbox",
		"dots.in.name.mbox/child": "dots.in.name%2Embox/child.mbox",
		"100% done":               "100%25 done.mbox",
	} {
		b, err := os.ReadFile(filepath.Join(all, file))
		if err != nil || !bytes.Contains(b, []byte("Subject: in "+name+"\n")) || bytes.Count(b, []byte("\nFrom ")) != 0 {
			t.Errorf("mailbox %q in %s: %q (%v), want its one message", name, file, b, err)
		}
	}

	// Unknown mailboxes and formats are refused before anything is written.
	for _, args := range [][]string{
		{"--db", f.db, "--mailbox", "Nope", filepath.Join(t.TempDir(), "x")},
		{"--db", f.db, "--format", "mh", filepath.Join(t.TempDir(), "y")},
		{"--db", filepath.Join(t.TempDir(), "missing.db"), filepath.Join(t.TempDir(), "z")},
	} {
		dest := args[len(args)-1]
		if code, out := runExportCmd(t, args...); code == 0 || !strings.Contains(out, "cspool") {
			t.Errorf("export %v: exit %d, %q; want a failure", args, code, out)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Errorf("export %v created %s", args, dest)
		}
	}
}

// TestExportCaseFolding: on a file system that ignores case (macOS,
// Windows) the folders of "Foo" and "foo" are one, and an export mixed
// their messages without a word; it is refused, on every file system,
// naming both, before anything is written. A level "CUR" (Maildir) or
// "x.MBOX" (mbox) is escaped as "cur" and "x.mbox" are, since such a file
// system would take it for the parent's cur folder or the file of "x".
func TestExportCaseFolding(t *testing.T) {
	t.Parallel()
	f := newExportFixture(t, "Foo", "foo", "Archive/CUR", "other", "other.MBOX/child")
	for _, format := range []string{"maildir", "mbox"} {
		dest := filepath.Join(t.TempDir(), "out")
		code, out := runExportCmd(t, "--db", f.db, "--format", format, dest)
		if code != 1 || !strings.Contains(out, "differ only by case") || !strings.Contains(out, `"Foo"`) || !strings.Contains(out, `"foo"`) {
			t.Errorf("%s export with Foo and foo: exit %d, %q; want 1, naming both", format, code, out)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Errorf("%s export with Foo and foo created %s", format, dest)
		}
	}
	// Each alone, and the others, are exported.
	dest := filepath.Join(t.TempDir(), "out")
	if code, out := runExportCmd(t, "--db", f.db, "--mailbox", "foo", "--mailbox", "Archive/cur", "--mailbox", "Archive/CUR", dest); code != 0 {
		t.Fatalf("export of foo alone: exit %d: %s", code, out)
	}
	for name, dir := range map[string]string{"foo": "foo", "Archive/cur": "Archive/%63%75%72", "Archive/CUR": "Archive/%43%55%52"} {
		files, err := filepath.Glob(filepath.Join(dest, dir, "cur", "*"))
		if err != nil || len(files) != 1 {
			t.Errorf("mailbox %q: %d files in %s/cur (%v), want 1", name, len(files), dir, err)
		}
	}
	mbox := filepath.Join(t.TempDir(), "mbox")
	if code, out := runExportCmd(t, "--db", f.db, "--format", "mbox", "--mailbox", "other", "--mailbox", "other.MBOX/child", mbox); code != 0 {
		t.Fatalf("mbox export: exit %d: %s", code, out)
	}
	for name, file := range map[string]string{"other": "other.mbox", "other.MBOX/child": "other%2EMBOX/child.mbox"} {
		if b, err := os.ReadFile(filepath.Join(mbox, file)); err != nil || !bytes.Contains(b, []byte("Subject: in "+name+"\n")) {
			t.Errorf("mailbox %q in %s: %q (%v), want its one message", name, file, b, err)
		}
	}
}

// TestExportNormalization: macOS's file systems take the composed and the
// decomposed forms of an accented letter for one name (APFS compares names
// normalized, HFS+ stores them decomposed), so the folders or files of
// "Café" written each way were one and an export mixed their messages; it
// is refused as names differing only by case are, naming both, before
// anything is written. Accented names that are not one are exported.
func TestExportNormalization(t *testing.T) {
	t.Parallel()
	const (
		composed   = "Caf\u00e9"       // é, U+00E9
		decomposed = "Cafe\u0301"      // e, U+0301 COMBINING ACUTE ACCENT
		upper      = "CAF\u0045\u0301" // E, U+0301
	)
	for _, tc := range []struct {
		names []string
		want  string // the error, and the two names in it, their code points shown
	}{
		{[]string{composed, decomposed}, `mailboxes "Cafe\u0301" and "Caf\u00e9" differ only by Unicode normalization`},
		// The parents, created with their children, are the first pair.
		{[]string{composed + "/2024", decomposed + "/2024"}, `mailboxes "Cafe\u0301" and "Caf\u00e9" differ only by Unicode normalization`},
		{[]string{composed, upper}, `mailboxes "CAFE\u0301" and "Caf\u00e9" differ only by Unicode normalization (an accented letter composed in one, decomposed in the other) and by case`},
	} {
		f := newExportFixture(t, tc.names...)
		for _, format := range []string{"maildir", "mbox"} {
			dest := filepath.Join(t.TempDir(), "out")
			code, out := runExportCmd(t, "--db", f.db, "--format", format, dest)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("%s export with %+q and %+q: exit %d, %q; want 1, %q", format, tc.names[0], tc.names[1], code, out, tc.want)
			}
			if _, err := os.Stat(dest); err == nil {
				t.Errorf("%s export with %+q and %+q created %s", format, tc.names[0], tc.names[1], dest)
			}
		}
	}
	// Each alone is exported, byte for byte under its own name, and so are
	// accented names that are not one.
	f := newExportFixture(t, composed, decomposed, "Men\u00fc", "Caf\u00e8")
	dest := filepath.Join(t.TempDir(), "out")
	if code, out := runExportCmd(t, "--db", f.db, "--mailbox", decomposed, "--mailbox", "Men\u00fc", "--mailbox", "Caf\u00e8", dest); code != 0 {
		t.Fatalf("export of %q alone: exit %d: %s", decomposed, code, out)
	}
	for _, name := range []string{decomposed, "Men\u00fc", "Caf\u00e8"} {
		files, err := filepath.Glob(filepath.Join(dest, name, "cur", "*"))
		if err != nil || len(files) != 1 {
			t.Errorf("mailbox %q: %d files in its cur (%v), want 1", name, len(files), err)
		}
	}
}
