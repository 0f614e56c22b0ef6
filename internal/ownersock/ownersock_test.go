package ownersock

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// echo serves one line back per connection until ln is closed.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte(line))
		}()
	}
}

// roundTrip dials path, sends a line and returns the answer.
func roundTrip(t *testing.T, path string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return line, nil
}

func listen(t *testing.T, path string) *Listener {
	t.Helper()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen(%s): %v", path, err)
	}
	t.Cleanup(func() { ln.Close() })
	go echo(ln)
	return ln
}

func TestListenAndDial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.run", "control.sock")
	ln := listen(t, path)
	info, err := os.Stat(filepath.Dir(path))
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v, mode %v; want 0700", err, info.Mode())
	}
	if got, err := roundTrip(t, path); err != nil || got != "ping\n" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want gone", err)
	}
	if _, err := roundTrip(t, path); !errors.Is(err, ErrNotRunning) {
		t.Errorf("dial after Close: %v, want ErrNotRunning", err)
	}
	if _, err := roundTrip(t, filepath.Join(t.TempDir(), "none.run", "control.sock")); !errors.Is(err, ErrNotRunning) {
		t.Errorf("dial without a directory: %v, want ErrNotRunning", err)
	}
}

func TestStaleSocketRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.run", "control.sock")
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	// A killed process leaves its socket file behind.
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the stale socket is not there: %v", err)
	}
	if _, err := roundTrip(t, path); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("dial to the stale socket: %v, want ErrNotRunning", err)
	}
	listen(t, path)
	if got, err := roundTrip(t, path); err != nil || got != "ping\n" {
		t.Fatalf("round trip after replacing the stale socket: %q, %v", got, err)
	}
}

func TestLiveSocketKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.run", "control.sock")
	listen(t, path)
	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
	if got, err := roundTrip(t, path); err != nil || got != "ping\n" {
		t.Fatalf("the first listener stopped answering: %q, %v", got, err)
	}
}

func TestNotASocketKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.run", "control.sock")
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Listen over a file: %v, want 'is not a socket'", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "mine" {
		t.Errorf("the file was touched: %q, %v", b, err)
	}
}

func TestUnsafeDirRefused(t *testing.T) {
	type setup func(t *testing.T, dir string)
	cases := []struct {
		name   string
		setup  setup
		reason string
	}{
		{"group and others", func(t *testing.T, dir string) { chmod(t, dir, 0o755) }, "mode 0755"},
		{"group only", func(t *testing.T, dir string) { chmod(t, dir, 0o710) }, "mode 0710"},
		{"symbolic link", func(t *testing.T, dir string) {
			real := dir + ".real"
			if err := os.Rename(dir, real); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(real, dir); err != nil {
				t.Fatal(err)
			}
		}, "not a directory"},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, struct {
			name   string
			setup  setup
			reason string
		}{"another owner", func(t *testing.T, dir string) {
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "owned by uid 65534"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db.run", "control.sock")
			ln := listen(t, path)
			accepted := make(chan struct{}, 1)
			// A second listener sees whether Dial connects at all.
			ln.Close()
			raw, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			go func() {
				if c, err := raw.Accept(); err == nil {
					c.Close()
					accepted <- struct{}{}
				}
			}()
			c.setup(t, filepath.Dir(path))
			var ue *UnsafeDirError
			if _, err := roundTrip(t, path); !errors.As(err, &ue) || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("Dial: %v, want an UnsafeDirError saying %q", err, c.reason)
			}
			if _, err := Listen(path); !errors.As(err, &ue) || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("Listen: %v, want an UnsafeDirError saying %q", err, c.reason)
			}
			select {
			case <-accepted:
				t.Error("Dial connected through an unsafe directory")
			case <-time.After(100 * time.Millisecond):
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLongPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < 200 {
		dir = filepath.Join(dir, "a-rather-long-folder-name")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mail.db.run", "control.sock")
	if len(path) <= maxPath {
		t.Fatalf("path %d bytes, want over %d", len(path), maxPath)
	}
	ln := listen(t, path)
	if info, err := os.Lstat(path); err != nil || info.Mode().Type() != fs.ModeSocket {
		t.Fatalf("socket at the long path: %v, %v", info, err)
	}
	if got, err := roundTrip(t, path); err != nil || got != "ping\n" {
		t.Fatalf("round trip over a %d-byte path: %q, %v", len(path), got, err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want gone", err)
	}
}
