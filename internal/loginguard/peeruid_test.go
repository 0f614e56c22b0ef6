package loginguard

import (
	"net"
	"os"
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
		uid, ok := peerUID(remote.IP, remote.Port)
		if !ok || uid != uint32(os.Getuid()) {
			t.Errorf("%s: peerUID of the client's socket = %d, %v; want %d", network, uid, ok, os.Getuid())
		}
		if key := sourceKey(remote); !strings.HasPrefix(key, "loopback uid ") {
			t.Errorf("%s: source %q, want this user's loopback source", network, key)
		}
	}
	if _, ok := peerUID(net.IPv4(127, 0, 0, 1), 1); ok {
		t.Error("peerUID found an owner for a port no socket has")
	}
	if key := sourceKey(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); key != "loopback" {
		t.Errorf("source of an unknown loopback socket %q, want loopback", key)
	}
}
