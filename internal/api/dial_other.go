//go:build !linux

package api

import "syscall"

// setUnackedTimeout: TCP_USER_TIMEOUT is Linux's; elsewhere the keep-alive
// settings alone apply.
func setUnackedTimeout(string, string, syscall.RawConn) error { return nil }
