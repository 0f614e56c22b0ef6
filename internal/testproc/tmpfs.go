package testproc

import (
	"os"
	"os/exec"
	"testing"
)

// MountTmpfs mounts a tmpfs of size ("16m"), mode 0700, on dir, made if missing, and
// unmounts it at the end of the test; it skips the test where mounting is
// not permitted (it needs root). The disk-full tests fill it.
func MountTmpfs(t testing.TB, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs on %s (needs root and permission to mount): %v %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v %s", dir, err, out)
		}
	})
}
