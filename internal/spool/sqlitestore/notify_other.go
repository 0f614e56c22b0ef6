//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package sqlitestore

import (
	"errors"
	"log/slog"
)

var errNotifyUnsupported = errors.New("unix datagram sockets are not supported on this system")

// notifier is absent here: other processes' appends are noticed by the
// fallback check alone.
type notifier struct{}

func listen(string, *slog.Logger) (*notifier, error) { return nil, errNotifyUnsupported }

func (*notifier) stop()                            {}
func (*notifier) cleanup()                         {}
func (*notifier) send([]string)                    {}
func (*notifier) receive() ([]string, bool, error) { return nil, false, errNotifyUnsupported }
