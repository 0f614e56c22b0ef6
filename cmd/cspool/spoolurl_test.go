package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestSpoolURLMistakes gives `cspool sync` the spool server's address as
// operators mistype it, against a real server. Without a scheme
// ("127.0.0.1:PORT") it said `first path segment in URL cannot contain
// colon`, and with the API's path (".../v1/") only "want
// http(s)://HOST[:PORT]"; now each error says what to write, and what
// it says to write syncs.
func TestSpoolURLMistakes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	srv := startServer(t, bin, "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", filepath.Join(dir, "spool.sec"))
	hostPort := strings.TrimPrefix(srv.url, "http://")
	sync := []string{"sync", "--once", "--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub",
		"--spool-key", "spool.pub", "--db", "mail.db", "--spool-server"}
	for _, c := range []struct{ url, want string }{
		{hostPort, "has no scheme: write https://" + hostPort + ", or http://" + hostPort + " for a server without TLS"},
		{srv.url + "/v1/", "has a path or query after the host: the spool server's API is at its root; write " + srv.url},
		{srv.url + "/?user=alice", "write " + srv.url},
	} {
		code, out, errOut := runExit(t, dir, nil, bin, append(sync, c.url)...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("--spool-server %s: exit %d, stdout %q, stderr %q; want 2 and %q", c.url, code, out, errOut, c.want)
		}
	}
	if code, out, errOut := runExit(t, dir, nil, bin, append(sync, "http://"+hostPort)...); code != 0 {
		t.Fatalf("--spool-server http://%s, as the error said: exit %d, stdout %q, stderr %q", hostPort, code, out, errOut)
	}
}
