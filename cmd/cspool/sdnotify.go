package main

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
)

// notifyReady tells systemd that the service is ready, for units of
// Type=notify (docs/systemd): "READY=1" as one datagram to the socket named
// by $NOTIFY_SOCKET (sd_notify(3); a name starting with '@' is in the
// abstract namespace). Without the variable it does nothing. A failure is
// logged: systemd then times the start out and says so itself.
func notifyReady(e *env, log *slog.Logger) {
	path := e.getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	err := func() error {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("READY=1"))
		return err
	}()
	if err != nil {
		log.Error("telling systemd the service is ready failed", "err", fmt.Errorf("NOTIFY_SOCKET: %w", err))
	}
}
