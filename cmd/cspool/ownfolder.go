package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkPrivateFolder refuses a folder that another user owns or that group
// or others may write to (what names it, kept what is kept there, hint
// says where to go instead), as OpenSSH's StrictModes refuses such a home
// or ~/.ssh: whoever may write to a folder may remove, rename and replace
// the files in it, or make them first. A folder group may write to is
// refused too: who is in a group is not this program's to see, and a
// group gains members later. A folder that does not exist passes: what
// opens it next says so. A refusal exits 77, as a key file's mode.
func checkPrivateFolder(dir, what, kept, hint string) error {
	info, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return &exitError{withHint(fmt.Errorf("%s is owned by %s, not by this user (%s): its owner can replace %s",
			what, userName(int(st.Uid)), userName(os.Geteuid()), kept), hint), exNoPerm}
	}
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return &exitError{withHint(fmt.Errorf("%s may be written to by other users (mode %04o): they can replace %s",
			what, perm, kept), hint+", or run: chmod go-w "+shellQuote(dir)), exNoPerm}
	}
	return nil
}

// checkDBFolder refuses a --db whose folder another user owns or others
// may write to (checkPrivateFolder), before anything is made there:
// another local user could otherwise make first, or replace, the lock
// DB.lock, the database's -wal and -shm, DB.password and the folder
// DB.run of the control socket (a sticky /tmp included: there the files
// made first stay their maker's).
func checkDBFolder(dbPath string) error {
	dir := filepath.Dir(dbPath)
	return checkPrivateFolder(dir, "the folder of --db "+dbPath+" ("+dir+")",
		"the files kept beside the database (its lock, its write-ahead log, DB.password, the control socket)",
		"keep --db in a folder of your own that only you may write to (mkdir -m 700 ~/.local/share/cspool; under systemd, StateDirectory=)")
}
