//go:build !unix

package outbox

// fileID is "" where files have no inode: only the machine tells a copy.
func fileID(string) string { return "" }
