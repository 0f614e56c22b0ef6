package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeviceNoticesDeadPath: a device whose connections to the spool die
// without a word (a laptop that moved to another network: neither the
// spool's answers nor a reset reach it any more) reads again on a new
// connection within half a minute and gets the mail delivered meanwhile.
// Before, its long-poll was taken for alive for about 5 minutes (the
// system's keep-alive defaults), 7 by the read's own bound.
//
// The spool server and the daemon run in a network namespace of their own
// with its loopback alone; the path dies by policy routing rules that
// blackhole the daemon's established connections by their port, so new
// connections work as on the new network. Needs root, unshare, nsenter, ip
// and ss.
func TestDeviceNoticesDeadPath(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and waits for a dead connection to be noticed")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("required in CI: a network namespace needs root")
		}
		t.Skip("a network namespace needs root; skipping")
	}
	unshare := needTool(t, "unshare", "util-linux")
	nsenter := needTool(t, "nsenter", "util-linux")
	ip := needTool(t, "ip", "iproute2")
	ss := needTool(t, "ss", "iproute2")
	bin := buildServerBinary(t)
	work, _, _ := aliceWithSpool(t)
	env := os.Environ()

	holder := exec.Command(unshare, "--net", "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatalf("starting a network namespace: %v", err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	inNS := func(args ...string) []string {
		return append([]string{"-t", fmt.Sprint(holder.Process.Pid), "-n", "--"}, args...)
	}
	netCmd := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(nsenter, inNS(args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s in the namespace: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The process is in the new namespace once unshare has made it: until
	// then nsenter would enter this one.
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)); err == nil && ns != own {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the network namespace did not come up")
		}
	}
	netCmd(ip, "link", "set", "lo", "up")

	const port = "18080" // in the namespace's own loopback
	spoolURL := "http://127.0.0.1:" + port
	startProc(t, "cspool server", work, env, nsenter, inNS(bin, "server", "--port", port, "--spool-dir", "spool",
		"--users", "users", "--spool-key", "spool.sec")...)
	daemon := startProc(t, "cspool imap-server", work, env, nsenter, inNS(bin, "imap-server", "--user", "alice",
		"--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", "spool.pub",
		"--db", "alice.db", "--port", "11143", "--status-addr", "", "--spool-server", spoolURL)...)
	daemon.waitOutput(t, "state:", 30*time.Second)

	deliver := func(n int) {
		t.Helper()
		name := fmt.Sprintf("m%d.eml", n)
		msg := fmt.Sprintf("From: bob@example.org\r\nSubject: message %d\r\n\r\nbody %d\r\n", n, n)
		if err := os.WriteFile(filepath.Join(work, name), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			cmd := exec.Command(nsenter, inNS(bin, "deliver", "--user", "alice", "--user-key", "user.pub",
				"--spool-key", "spool.sec", "--spool-server", spoolURL)...)
			cmd.Dir, cmd.Env = work, env
			f, err := os.Open(filepath.Join(work, name))
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdin = f
			out, err := cmd.CombinedOutput()
			f.Close()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("cspool deliver: %v\n%s", err, out)
			}
		}
	}
	position := regexp.MustCompile(`Position: +(\d+) of`)
	waitPosition := func(want string, d time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		last := ""
		for time.Since(start) < d {
			cmd := exec.Command(bin, "status", "--db", filepath.Join(work, "alice.db"))
			out, _ := cmd.CombinedOutput()
			last = string(out)
			if m := position.FindStringSubmatch(last); m != nil && m[1] == want {
				return time.Since(start)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Fatalf("the device did not reach position %s within %v; cspool status:\n%s", want, d, last)
		return 0
	}

	deliver(1)
	waitPosition("1", 30*time.Second)
	// The daemon's long-poll is parked at the spool now; find its
	// connections (ss -p names the process).
	time.Sleep(time.Second)
	pid := fmt.Sprintf("pid=%d,", daemon.cmd.Process.Pid)
	var ports []string
	for _, l := range strings.Split(netCmd(ss, "-tnpH", "state", "established", "( dport = :"+port+" )"), "\n") {
		if !strings.Contains(l, pid) {
			continue
		}
		// Recv-Q, Send-Q, local address:port, peer, process.
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		ports = append(ports, f[2][strings.LastIndexByte(f[2], ':')+1:])
	}
	if len(ports) == 0 {
		t.Fatalf("no connection of the daemon (%s) to the spool:\n%s", pid, netCmd(ss, "-tnpH"))
	}
	// Local delivery is looked up in the rules as well: the local table's
	// rule moves behind the blackholes.
	netCmd(ip, "rule", "add", "pref", "100", "lookup", "local")
	netCmd(ip, "rule", "del", "pref", "0")
	for i, p := range ports {
		netCmd(ip, "rule", "add", "pref", fmt.Sprint(1+2*i), "ipproto", "tcp", "sport", p, "blackhole")
		netCmd(ip, "rule", "add", "pref", fmt.Sprint(2+2*i), "ipproto", "tcp", "dport", p, "blackhole")
	}
	t.Logf("the path of the daemon's %d connection(s) from port(s) %s died", len(ports), strings.Join(ports, ", "))

	deliver(2)
	took := waitPosition("2", 75*time.Second)
	t.Logf("mail delivered after the path died reached the device in %v", took.Round(time.Millisecond))
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
}
