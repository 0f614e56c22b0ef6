//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package sqlitestore

// keyLock is absent here: HoldSpoolKey is KeepSpoolKey, which checks
// the key as before the hold (docs/STORE.md).
type keyLock struct{}

func openKeyLock(string, string) (*keyLock, error) { return nil, errNoFlock }

func (*keyLock) try(bool) (bool, error) { return false, errNoFlock }
func (*keyLock) unlock() error          { return nil }
func (*keyLock) close() error           { return nil }
