package loginguard

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestPeerUID: the kernel's owner of a loopback connection's client
// socket, over IPv4 and IPv6, is this program's user, and its source is
// that user's; an address no socket has is not known, and falls back to
// the one loopback source.
func TestPeerUID(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the kernel's socket tables are Linux's")
	}
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		remote := s.RemoteAddr().(*net.TCPAddr)
		uid, ok := peerUID(remote, s.LocalAddr().(*net.TCPAddr))
		if !ok || uid != uint32(os.Getuid()) {
			t.Errorf("%s: peerUID of the client's socket = %d, %v; want %d", network, uid, ok, os.Getuid())
		}
		if key := sourceKey(remote); !strings.HasPrefix(key, "loopback uid ") {
			t.Errorf("%s: source %q, want this user's loopback source", network, key)
		}
	}
	if _, ok := peerUID(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil); ok {
		t.Error("peerUID found an owner for a port no socket has")
	}
	if key := sourceKey(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); key != "loopback" {
		t.Errorf("source of an unknown loopback socket %q, want loopback", key)
	}
}

// TestFindUIDBothEnds: in a table where the client's port is also in
// TIME_WAIT (listed with uid 0) and bound by another socket with another
// peer, the uid is the one of the entry with both of the connection's
// ends; with the listener's end not known, TIME_WAIT entries are still
// passed by.
func TestFindUIDBothEnds(t *testing.T) {
	// 127.0.0.1:40000 -> 127.0.0.1:1143, and the same port to others.
	table := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:9C40 0100007F:1F90 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0000000000000000\n" +
		"   1: 0100007F:9C40 0100007F:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1\n" +
		"   2: 0100007F:9C40 0100007F:0477 01 00000000:00000000 00:00000000 00000000 65534        0 4243 1 0000000000000000 20 4 30 10 -1\n"
	path := filepath.Join(t.TempDir(), "tcp")
	if err := os.WriteFile(path, []byte(table), 0o600); err != nil {
		t.Fatal(err)
	}
	client := procAddr(net.IPv4(127, 0, 0, 1), 40000)
	for _, tc := range []struct {
		name    string
		peer    [][]byte
		uid     uint32
		matched bool
	}{
		{"both ends", procAddr(net.IPv4(127, 0, 0, 1), 1143), 65534, true},
		{"client end only", nil, 1000, true},
		{"a peer with no entry", procAddr(net.IPv4(127, 0, 0, 1), 25), 0, false},
	} {
		uid, ok := findUID(path, client, tc.peer)
		if uid != tc.uid || ok != tc.matched {
			t.Errorf("%s: uid %d, %v; want %d, %v", tc.name, uid, ok, tc.uid, tc.matched)
		}
	}
}
