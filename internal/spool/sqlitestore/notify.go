package sqlitestore

import "encoding/binary"

// Datagram format, version 1: the byte 1, then for each user its name's
// length as a uvarint and the name's bytes. No user at all means "some
// user's log changed": the receiver re-reads the heads of everyone it waits
// for. A receiver treats anything it cannot parse the same way, so a bad
// datagram can cause extra head reads but never a wrong wake-up. Lengths
// must be minimal uvarints, so each list has exactly one encoding.
const (
	notifyVersion   = 1
	maxDatagram     = 2048
	socketPrefix    = "s-"
	maxNotifiedName = maxDatagram - 1 - binary.MaxVarintLen64
)

// encodeUsers packs users into datagrams of at most maxDatagram bytes.
func encodeUsers(users []string) [][]byte {
	var out [][]byte
	msg := []byte{notifyVersion}
	for _, u := range users {
		if len(u) > maxNotifiedName {
			return [][]byte{{notifyVersion}} // wake-all is shorter
		}
		if len(msg)+binary.MaxVarintLen64+len(u) > maxDatagram {
			out = append(out, msg)
			msg = []byte{notifyVersion}
		}
		msg = binary.AppendUvarint(msg, uint64(len(u)))
		msg = append(msg, u...)
	}
	return append(out, msg)
}

// decodeUsers parses a datagram; all means "re-read every waited user".
func decodeUsers(msg []byte) (users []string, all bool) {
	if len(msg) == 0 || msg[0] != notifyVersion {
		return nil, true
	}
	msg = msg[1:]
	for len(msg) > 0 {
		n, k := binary.Uvarint(msg)
		if k <= 0 || k != len(binary.AppendUvarint(nil, n)) || n == 0 || n > uint64(len(msg)-k) {
			return nil, true
		}
		users = append(users, string(msg[k:k+int(n)]))
		msg = msg[k+int(n):]
	}
	return users, len(users) == 0
}
