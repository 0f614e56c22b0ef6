package loginguard

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
)

// procNetTCP are the kernel's tables of TCP sockets, each line naming a
// socket's local and remote address and its owner's uid (Linux, proc(5)).
var procNetTCP = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// peerUID returns the uid of the user that owns the client's end of a
// loopback connection from remote to local (the listener's end; nil: not
// known): the user of the program that connected, from the socket whose
// local address is remote and whose peer is local. ok is false where the
// kernel does not say (another system, no such socket any more).
//
// A local user cannot make a socket that the kernel lists as another
// user's, so this tells the user's own mail client from another user's
// program guessing passwords, which the loopback address alone does not.
// But a local address alone names more than one socket: a port in
// TIME_WAIT, which the kernel lists with uid 0, can be bound again with
// SO_REUSEADDR for a new connection, and so can another user's socket
// bound with SO_REUSEADDR. So the peer is matched too, and TIME_WAIT
// entries, whose uid is not their owner's, are passed by.
func peerUID(remote, local *net.TCPAddr) (uid uint32, ok bool) {
	if remote == nil || remote.Port <= 0 || remote.Port > 0xffff {
		return 0, false
	}
	want := procAddr(remote.IP, remote.Port)
	if want == nil {
		return 0, false
	}
	var peer [][]byte
	if local != nil {
		if peer = procAddr(local.IP, local.Port); peer == nil {
			return 0, false
		}
	}
	for _, path := range procNetTCP {
		if uid, ok := findUID(path, want, peer); ok {
			return uid, true
		}
	}
	return 0, false
}

// procAddr writes ip:port as the kernel's tables do: the address as 32-bit
// words in the machine's byte order (little-endian here), in hex, then
// the port in hex. An IPv4 address is matched in /proc/net/tcp and, as
// an IPv4-mapped IPv6 address, in /proc/net/tcp6. nil for an address of
// neither form.
func procAddr(ip net.IP, port int) [][]byte {
	enc := func(b []byte) []byte {
		var out []byte
		for i := 0; i+4 <= len(b); i += 4 {
			out = fmt.Appendf(out, "%02X%02X%02X%02X", b[i+3], b[i+2], b[i+1], b[i])
		}
		return fmt.Appendf(out, ":%04X", port)
	}
	var forms [][]byte
	if v4 := ip.To4(); v4 != nil {
		forms = append(forms, enc(v4))
	}
	if v6 := ip.To16(); v6 != nil {
		forms = append(forms, enc(v6))
	}
	return forms
}

// tcpTimeWait is the state column of a TIME_WAIT entry (the kernel's
// TCP_TIME_WAIT), which the tables list with uid 0.
const tcpTimeWait = "06"

// findUID looks in the table at path for a socket, not in TIME_WAIT, whose
// local address is one of want and whose remote address is one of peer
// (nil: any), and returns its owner's uid.
func findUID(path string, want, peer [][]byte) (uint32, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the heading
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 8 {
			continue
		}
		if string(fields[3]) == tcpTimeWait || !oneOf(fields[1], want) || (peer != nil && !oneOf(fields[2], peer)) {
			continue
		}
		uid, err := strconv.ParseUint(string(fields[7]), 10, 32)
		if err != nil {
			return 0, false
		}
		return uint32(uid), true
	}
	return 0, false
}

// oneOf reports whether the table's address a is one of forms.
func oneOf(a []byte, forms [][]byte) bool {
	a = bytes.ToUpper(a)
	for _, f := range forms {
		if bytes.Equal(a, f) {
			return true
		}
	}
	return false
}

// PeerUID returns the uid of the user owning the client's end of a
// loopback TCP connection from remote to local (the listener's end, as
// http.LocalAddrContextKey gives it); ok is false where the kernel does
// not say, or where remote is not a loopback TCP address. Both ends are
// needed: with remote alone, a port in TIME_WAIT bound again could pass
// for another user's (peerUID).
func PeerUID(remote, local net.Addr) (uid uint32, ok bool) {
	r, rok := asTCPAddr(remote)
	l, lok := asTCPAddr(local)
	if !rok || !lok || !r.IP.IsLoopback() {
		return 0, false
	}
	return peerUID(r, l)
}

// asTCPAddr gives a as a *net.TCPAddr, parsing its String where it is of
// another type (http.Request.RemoteAddr is text).
func asTCPAddr(a net.Addr) (*net.TCPAddr, bool) {
	if a == nil {
		return nil, false
	}
	if t, ok := a.(*net.TCPAddr); ok {
		return t, t.IP != nil
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return nil, false
	}
	return net.TCPAddrFromAddrPort(ap), true
}
