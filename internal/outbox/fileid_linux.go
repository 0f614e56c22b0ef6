package outbox

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// fileID is the inode of the file at path and, where the file system
// keeps it, the file's birth time ("INODE/NANOSECONDS"); "" when it cannot
// be read. The device number is left out: it may change from one boot to
// the next (disks found in another order), the inode does not. The birth
// time tells a file restored after the original was removed: the file
// system hands the freed inode to the next file made, so "rm DB.outbox"
// and a copy back from a backup gave the copy the original's inode, and it
// relayed the queue the original may have sent since the backup.
func fileID(path string) string {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME, &st); err != nil || st.Mask&unix.STATX_INO == 0 {
		// No statx (a kernel before 4.11, a seccomp filter): the inode.
		var old unix.Stat_t
		if unix.Stat(path, &old) != nil {
			return ""
		}
		return strconv.FormatUint(old.Ino, 10)
	}
	id := strconv.FormatUint(st.Ino, 10)
	if st.Mask&unix.STATX_BTIME != 0 {
		id += "/" + strconv.FormatInt(st.Btime.Sec*1e9+int64(st.Btime.Nsec), 10)
	}
	return id
}
