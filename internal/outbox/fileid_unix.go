//go:build unix && !linux

package outbox

import (
	"os"
	"strconv"
	"syscall"
)

// fileID is the inode of the file at path, "" when it cannot be read.
// The device number is left out: it may change from one boot to the next
// (disks found in another order), the inode does not.
func fileID(path string) string {
	info, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return strconv.FormatUint(uint64(st.Ino), 10)
}
