//go:build linux || darwin || freebsd || netbsd || openbsd

package sqlitestore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// keyLock is the spool key's lock file (HoldLockName) opened by one Store:
// flock(2) locks belong to the open file, so two Stores of one process
// meet on it as two processes do, and the operating system drops a lock
// when its process ends, killed or not.
type keyLock struct{ f *os.File }

// openKeyLock opens the lock file for reading (flock needs no more),
// creating it, empty, with the permission bits of the database file db, as
// SQLite gives its -wal and -shm files: whoever may open the database may
// hold the key.
func openKeyLock(path, db string) (*keyLock, error) {
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(db); err == nil {
		mode = fi.Mode().Perm() &^ 0o111
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, mode)
	switch {
	case errors.Is(err, os.ErrExist):
		f, err = os.Open(path)
	case err == nil:
		err = f.Chmod(mode) // past the umask, as SQLite does
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	return &keyLock{f: f}, nil
}

// try takes the lock shared or exclusively without waiting; false: another
// open file holds it in a conflicting mode.
func (l *keyLock) try(exclusive bool) (bool, error) {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(l.f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		}
		return false, fmt.Errorf("locking %s: %w", l.f.Name(), err)
	}
}

// unlock drops the lock, keeping the file open.
func (l *keyLock) unlock() error { return syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN) }

// close drops the lock.
func (l *keyLock) close() error { return l.f.Close() }
