// Package ownersock makes and reaches Unix sockets that only their owner can
// open. The device daemon serves its state to `cspool status` on one
// (docs/STATUS.md, "The control socket"), so that the command needs no
// password and nothing it sends can reach another user's process.
//
// Implementation notes and invariants:
//
//   - The socket lives alone in a directory of its own, created with mode
//     0700. Before either side uses it, that directory must be a directory
//     (not a symbolic link), owned by the process's user, with no permission
//     bit for group or others; otherwise Listen and Dial refuse with an
//     *UnsafeDirError and touch nothing. No other user (root aside) can then
//     create, replace or connect to anything in it, whatever mode the socket
//     itself has and whatever the platform does with socket permissions.
//   - Listen removes a socket file left by a process that died without
//     cleaning up only when connecting to it is refused (nothing listens).
//     A socket that answers, or a path that is not a socket, is reported and
//     left alone. Listen's caller must already hold a lock that rules out a
//     second listener on the same path (the daemon's database lock), so the
//     check and the removal cannot race with another Listen.
//   - A socket address holds at most 107 bytes of path (sun_path, 108 with
//     the NUL). A longer path is reached through /proc/self/fd/N/NAME, N
//     being the directory opened by the process (Linux); where that does not
//     exist, the error says how long the path is and what to do.
//   - Closing the listener removes the socket file.
package ownersock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrNotRunning means nothing listens on the socket: there is no socket
// file, or connecting to it is refused (its process ended).
var ErrNotRunning = errors.New("nothing is listening")

// ErrInUse means another process answers on the socket Listen was to make.
var ErrInUse = errors.New("another process is listening on it")

// UnsafeDirError is a socket directory that other users could reach.
type UnsafeDirError struct {
	Dir    string
	Reason string // "mode 0755 lets other users in", "owned by uid 1001, not by uid 1000", ...
}

func (e *UnsafeDirError) Error() string {
	return fmt.Sprintf("socket directory %s is not private: %s", e.Dir, e.Reason)
}

// maxPath is the longest path a socket address holds (sun_path less the
// terminating NUL).
const maxPath = len(syscall.RawSockaddrUnix{}.Path) - 1

// Listen creates path's directory (mode 0700) if it is missing, checks it,
// removes a stale socket at path, and listens there.
func Listen(path string) (*Listener, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	dir := filepath.Dir(abs)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	d, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	addr, err := d.addr(abs)
	if err != nil {
		d.f.Close()
		return nil, err
	}
	if err := removeStale(abs, addr); err != nil {
		d.f.Close()
		return nil, err
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		d.f.Close()
		return nil, fmt.Errorf("listening on %s: %w", abs, err)
	}
	// Belt and braces: the directory already keeps others out.
	if err := os.Chmod(abs, 0o600); err != nil {
		ln.Close()
		d.f.Close()
		return nil, fmt.Errorf("control socket %s: %w", abs, err)
	}
	return &Listener{Listener: ln, dir: d.f, path: abs}, nil
}

// Listener is a listening control socket. It keeps the socket's directory
// open while the socket may be reached through it.
type Listener struct {
	net.Listener
	dir  *os.File
	path string
}

// Close stops listening and removes the socket file.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	l.dir.Close()
	return err
}

// Path is the socket's absolute path.
func (l *Listener) Path() string { return l.path }

// Dial checks path's directory and connects to the socket. A missing socket
// or a refused connection is ErrNotRunning; a directory others could reach
// is an *UnsafeDirError, and nothing is sent.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	d, err := openDir(filepath.Dir(abs))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (no socket directory)", abs, ErrNotRunning)
	}
	if err != nil {
		return nil, err
	}
	defer d.f.Close()
	addr, err := d.addr(abs)
	if err != nil {
		return nil, err
	}
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "unix", addr)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("%s: %w (%v)", abs, ErrNotRunning, err)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", abs, err)
	}
	return c, nil
}

// privateDir is an open socket directory that passed the check.
type privateDir struct {
	f *os.File
}

// openDir opens dir without following a symbolic link and checks, on the
// open file, that it is a directory private to this user.
func openDir(dir string) (*privateDir, error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP) {
		return nil, &UnsafeDirError{Dir: dir, Reason: "it is not a directory (a symbolic link or a file)"}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "opening socket directory", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("socket directory %s: %w", dir, err)
	}
	if reason := private(info); reason != "" {
		f.Close()
		return nil, &UnsafeDirError{Dir: dir, Reason: reason}
	}
	return &privateDir{f: f}, nil
}

// private says what makes info not a private directory, or "".
func private(info fs.FileInfo) string {
	st, ok := info.Sys().(*syscall.Stat_t)
	switch {
	case !info.IsDir():
		return "it is not a directory"
	case !ok:
		return "its owner cannot be read on this system"
	case int(st.Uid) != os.Geteuid():
		return fmt.Sprintf("it is owned by uid %d, not by this user (uid %d)", st.Uid, os.Geteuid())
	case info.Mode().Perm()&0o077 != 0:
		return fmt.Sprintf("mode %04o lets other users in (want 0700)", info.Mode().Perm())
	}
	return ""
}

// addr is the address to give the kernel for the socket abs inside d: abs
// itself when it fits, else abs reached through the open directory.
func (d *privateDir) addr(abs string) (string, error) {
	if len(abs) <= maxPath {
		return abs, nil
	}
	via := fmt.Sprintf("/proc/self/fd/%d/%s", d.f.Fd(), filepath.Base(abs))
	if _, err := os.Stat(fmt.Sprintf("/proc/self/fd/%d", d.f.Fd())); err != nil || len(via) > maxPath {
		return "", fmt.Errorf("control socket path %s is %d bytes, longer than the %d a socket address holds: use a shorter path",
			abs, len(abs), maxPath)
	}
	return via, nil
}

// removeStale removes a socket file at abs (reached as addr) when nothing
// answers on it.
func removeStale(abs, addr string) error {
	info, err := os.Lstat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if info.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it if nothing of yours uses it", abs)
	}
	c, err := net.DialTimeout("unix", addr, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", abs, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("checking the old socket %s: %w", abs, err)
	}
	if err := os.Remove(abs); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale socket: %w", err)
	}
	return nil
}
