package loginguard

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
)

// procNetTCP are the kernel's tables of TCP sockets, each line naming a
// socket's local and remote address and its owner's uid (Linux, proc(5)).
var procNetTCP = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// peerUID returns the uid of the user that owns the TCP socket at ip:port
// on this machine: for a connection from a loopback address, the user of
// the program that connected, from the socket whose local address is the
// connection's remote one. ok is false where the kernel does not say
// (another system, no such socket any more).
//
// A local user cannot make a socket that the kernel lists as another
// user's, so this tells the user's own mail client from another user's
// program guessing passwords, which the loopback address alone does not.
func peerUID(ip net.IP, port int) (uid uint32, ok bool) {
	if port <= 0 || port > 0xffff {
		return 0, false
	}
	want := procAddr(ip, port)
	if want == nil {
		return 0, false
	}
	for _, path := range procNetTCP {
		if uid, ok := findUID(path, want); ok {
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

// findUID looks in the table at path for a socket whose local address is
// one of want, and returns its owner's uid.
func findUID(path string, want [][]byte) (uint32, bool) {
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
		local := bytes.ToUpper(fields[1])
		for _, w := range want {
			if bytes.Equal(local, w) {
				uid, err := strconv.ParseUint(string(fields[7]), 10, 32)
				if err != nil {
					return 0, false
				}
				return uint32(uid), true
			}
		}
	}
	return 0, false
}
