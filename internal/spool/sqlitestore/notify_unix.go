//go:build linux || darwin || freebsd || netbsd || openbsd

package sqlitestore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// maxSunPath is the usable length of a socket path (sun_path is 104 bytes on
// the BSDs, 108 on Linux, both with a terminating NUL).
const maxSunPath = 103

// notifier is this Store's datagram socket in the notify directory. The same
// socket receives other processes' notices and sends this one's.
type notifier struct {
	dir  string   // the notify directory
	self string   // this socket's file name in dir
	dirf *os.File // held open for /proc/self/fd paths when dir is too long
	conn *net.UnixConn
	raw  syscall.RawConn
	log  *slog.Logger
	buf  []byte

	// The other sockets in dir as last listed, and the directory's
	// modification time read before that listing: send lists dir again
	// only once it has changed (a socket bound or removed), not for every
	// commit. A change made within dirSettle of the last one may leave
	// the time as it was (file systems keep coarse times), so a listing is
	// trusted only if it began dirSettle or more after that time; until
	// one does, dir is listed every time.
	peers    []string
	listedAt time.Time    // dir's modification time at the trusted listing; zero: none
	listings atomic.Int64 // how many times dir was listed, for tests
}

// dirSettle is well over the coarsest clock a file
// system stamps a directory's change with (a jiffy, up to 10 ms).
const dirSettle = time.Second

// listen binds a new socket with a random name in dir, creating dir (0700).
func listen(dir string, log *slog.Logger) (*notifier, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating notify directory: %w", err)
	}
	n := &notifier{dir: dir, log: log, buf: make([]byte, maxDatagram+1)}
	if len(dir)+1+len(socketPrefix)+16 > maxSunPath {
		if runtime.GOOS != "linux" {
			return nil, fmt.Errorf("notify directory path %s too long for a socket", dir)
		}
		f, err := os.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("opening notify directory: %w", err)
		}
		n.dirf = f
	}
	for range 10 {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			n.closeDir()
			return nil, err
		}
		name := socketPrefix + hex.EncodeToString(rnd[:])
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.addr(name), Net: "unixgram"})
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			n.closeDir()
			return nil, fmt.Errorf("binding notify socket: %w", err)
		}
		raw, err := conn.SyscallConn()
		if err != nil {
			conn.Close()
			n.closeDir()
			return nil, fmt.Errorf("binding notify socket: %w", err)
		}
		n.self, n.conn, n.raw = name, conn, raw
		return n, nil
	}
	n.closeDir()
	return nil, errors.New("binding notify socket: no free name")
}

// addr is the socket address of the file name in the notify directory.
func (n *notifier) addr(name string) string {
	if n.dirf != nil {
		return "/proc/self/fd/" + strconv.Itoa(int(n.dirf.Fd())) + "/" + name
	}
	return filepath.Join(n.dir, name)
}

func (n *notifier) closeDir() {
	if n.dirf != nil {
		n.dirf.Close()
	}
}

// stop closes the socket, which ends a blocked receive; send then fails
// harmlessly.
func (n *notifier) stop() {
	n.conn.Close()
}

// cleanup removes the socket's file; call it after stop, once nothing
// sends any more.
func (n *notifier) cleanup() {
	os.Remove(filepath.Join(n.dir, n.self))
	n.closeDir()
}

// receive blocks for the next datagram.
func (n *notifier) receive() (users []string, all bool, err error) {
	k, err := n.conn.Read(n.buf)
	if err != nil {
		return nil, false, err
	}
	users, all = decodeUsers(n.buf[:k])
	return users, all, nil
}

// send tells every other socket in the directory that users' logs changed.
// It never blocks: a full receiver misses the notice (its fallback check
// will see the change), and a socket file nobody is bound to any more (its
// process died) is removed.
func (n *notifier) send(users []string) {
	peers, err := n.list()
	if err != nil {
		n.log.Warn("spool: listing notify directory", "err", err)
		return
	}
	var msgs [][]byte
	for _, name := range peers {
		if msgs == nil {
			msgs = encodeUsers(users)
		}
		for _, msg := range msgs {
			err := n.sendTo(name, msg)
			if errors.Is(err, syscall.ECONNREFUSED) {
				if err := os.Remove(filepath.Join(n.dir, name)); err == nil {
					n.log.Debug("spool: removed stale notify socket", "name", name)
				}
			}
			if err != nil {
				break // refused, gone, full: stop sending to this one
			}
		}
	}
}

// list returns the other sockets in the directory: those listed before
// while the directory has not changed since (one stat), or a new listing.
func (n *notifier) list() ([]string, error) {
	now := time.Now()
	fi, err := os.Stat(n.dir)
	if err != nil {
		return nil, err
	}
	mod := fi.ModTime()
	if !n.listedAt.IsZero() && mod.Equal(n.listedAt) {
		return n.peers, nil
	}
	ents, err := os.ReadDir(n.dir)
	if err != nil {
		return nil, err
	}
	n.listings.Add(1)
	n.peers = n.peers[:0]
	for _, ent := range ents {
		if name := ent.Name(); name != n.self && strings.HasPrefix(name, socketPrefix) {
			n.peers = append(n.peers, name)
		}
	}
	n.listedAt = time.Time{}
	if now.Sub(mod) >= dirSettle {
		n.listedAt = mod
	}
	return n.peers, nil
}

func (n *notifier) sendTo(name string, msg []byte) error {
	sa := &syscall.SockaddrUnix{Name: n.addr(name)}
	var serr error
	err := n.raw.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), msg, syscall.MSG_DONTWAIT, sa)
		return true
	})
	if err != nil {
		return err
	}
	return serr
}
