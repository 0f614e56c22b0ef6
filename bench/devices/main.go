// Command devices measures a spool server under many idle devices: it
// builds an installation of --users users from scratch (keys, a users
// file, one delivered message in every log), starts --servers `cspool
// server` processes on it (SQLite, or PostgreSQL with --store postgres),
// and connects one device per user. A device does what the daemon's sync
// loop does once it is up to date: a signed read of its log with a
// long-poll of --wait, again and again, each from a loopback address of its
// own (127.0.0.0/8 is all loopback on Linux), so the server's limit of
// connections per address applies as it would to real devices.
//
// With every device waiting it measures, for each server process, the
// resident memory and the CPU it uses over --idle seconds, then delivers
// --pushes messages over LMTP, one every --push-every, each to a random
// device, and measures from the LMTP 250 to that device's read returning
// the entry (the push latency). With two servers, devices are spread over
// both and deliveries go through the first, so half of the pushes cross
// from one server process to the other.
//
// With --restart it then stops the first server (SIGINT), leaves it down
// for --down, and starts it again on the same ports and store, as an
// operator's restart does, while every device does what the daemon does
// when the spool stops answering: it asks /v1/health every 500 ms (±10%),
// every 5 s once the outage is a minute old (internal/syncer's
// ProbeInterval, ProbeSlowAfter, ProbeSlowInterval), and, once answered,
// reads its log without waiting, then long-polls again. It measures how long the stop took, how long after the new
// process listened each device read again (p50, p99, the last), the new
// process's CPU and peak memory until the last was back, the requests and
// errors of the return, and the push latency after it.
//
// Every phase is bounded in time; the run fails if a device cannot
// connect or a push is not seen within a minute. A device's first
// long-poll waits a random part of --wait, so that the renewals, which are
// the idle load, come at a steady rate (users / wait) from the start, as
// those of devices that came up at different times. Each device holds a
// connection, so the program raises its open-file limit (RLIMIT_NOFILE) to
// the hard limit, which the servers it starts inherit, and refuses to run
// when that is below --users + 1,000.
//
// With --tls the servers serve the API over TLS (a self-signed certificate
// for 127.0.0.1 made in the work directory, `--tls-cert`/`--tls-key`) and
// the devices connect with it, HTTP/1.1 as the server speaks it
// (docs/TLS.md): each device's long-poll then holds a TLS connection.
//
//	go run ./bench/devices --cspool /tmp/cspool --users 10000 --idle 60s
//	go run ./bench/devices --cspool /tmp/cspool --users 10000 --store postgres --servers 2
//	go run ./bench/devices --cspool /tmp/cspool --users 10000 --tls
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/sqlitestore"
)

type config struct {
	cspool    string
	users     int
	servers   int
	store     string
	dsn       string
	wait      time.Duration
	idle      time.Duration
	ramp      time.Duration
	pushes    int
	pushEvery time.Duration
	work      string
	keep      bool
	jsonOut   bool
	extra     string
	restart   bool
	down      time.Duration
	tls       bool
	// With tls: the servers' certificate and key files, and the pool
	// the devices verify it with.
	tlsCert, tlsKey string
	tlsRoots        *x509.CertPool
}

func main() {
	var c config
	flag.StringVar(&c.cspool, "cspool", "", "the cspool binary to run as the server (required)")
	flag.IntVar(&c.users, "users", 10000, "users, one device each")
	flag.IntVar(&c.servers, "servers", 1, "server processes on the same store (1 or 2)")
	flag.StringVar(&c.store, "store", "sqlite", "sqlite or postgres")
	flag.StringVar(&c.dsn, "dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL admin DSN; a fresh database is made and dropped")
	flag.DurationVar(&c.wait, "wait", 5*time.Minute, "long-poll wait of each read (the daemon's default; the server grants at most its --max-wait)")
	flag.DurationVar(&c.idle, "idle", 60*time.Second, "idle window measured")
	flag.DurationVar(&c.ramp, "ramp", 20*time.Second, "devices start spread over this long")
	flag.IntVar(&c.pushes, "pushes", 200, "deliveries whose push latency is measured")
	flag.DurationVar(&c.pushEvery, "push-every", 50*time.Millisecond, "time between deliveries")
	flag.StringVar(&c.work, "work", "", "work directory (default: a new temporary one, removed afterwards)")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory")
	flag.BoolVar(&c.jsonOut, "json", false, "also print the result as one JSON line")
	flag.StringVar(&c.extra, "server-flags", "", "extra flags for every server, space-separated")
	flag.BoolVar(&c.restart, "restart", false, "then restart the first server and measure the devices' return")
	flag.DurationVar(&c.down, "down", 3*time.Second, "with --restart: how long the server stays stopped")
	flag.BoolVar(&c.tls, "tls", false, "serve the API over TLS (a self-signed certificate for 127.0.0.1)")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "devices:", err)
		os.Exit(1)
	}
}

// result is what one run measured.
type result struct {
	Users, Servers           int
	Store                    string
	TLS                      bool
	SetupSeconds             float64
	RampSeconds              float64
	IdleSeconds              float64
	ServerRSSMB              []float64 // at the end of the idle window
	ServerPeakMB             []float64 // VmHWM at the end of the run
	ServerIdleCPUPct         []float64 // of one core, over the idle window
	LoadCPUPct               float64   // the devices' own process, same window
	PostgresCPUPct           float64   // the servers' PostgreSQL backends, same window
	IdleRequestsPerSec       float64
	PushP50ms, PushP99ms     float64
	PushMaxms                float64
	Pushes                   int
	DeviceErrors             map[string]int64
	LoadAverage              string
	PushFromDataEndP99ms     float64
	PushCrossP99ms           float64 // two servers: pushes to devices of the second server
	PushSameP99ms            float64 // two servers: pushes to devices of the first
	ServerThreads            []int
	ServerRSSPerDeviceKB     []float64
	ServerRSSBeforeDevicesMB []float64
	Restart                  *restartResult `json:",omitempty"`
}

// restartResult is what --restart measured.
type restartResult struct {
	StopSeconds          float64 // SIGINT to the process's exit
	DownSeconds          float64 // the exit to the new process listening
	BackP50s, BackP99s   float64 // the new process listening -> a device's first read answered
	BackMaxs             float64
	Back                 int     // devices back within the bound
	ServerCPUSeconds     float64 // the new process, from its start to the last device back
	ServerPeakMB         float64 // its VmHWM then
	ServerIdleRSSMB      float64 // its VmRSS after the pushes
	RequestsPerDevice    float64 // reads and probes from the stop to the last device back
	Errors               map[string]int64
	PushP50ms, PushP99ms float64
	Pushes               int
}

func run(c config) error {
	if c.cspool == "" {
		return errors.New("--cspool is required")
	}
	if c.servers < 1 || c.servers > 2 {
		return errors.New("--servers must be 1 or 2")
	}
	if err := raiseFileLimit(uint64(c.users) + 1000); err != nil {
		return err
	}
	work := c.work
	if work != "" {
		if err := os.MkdirAll(work, 0o700); err != nil {
			return err
		}
	} else {
		d, err := os.MkdirTemp("", "cspool-devices-")
		if err != nil {
			return err
		}
		work = d
		if !c.keep {
			defer os.RemoveAll(work)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := result{Users: c.users, Servers: c.servers, Store: c.store, TLS: c.tls, DeviceErrors: map[string]int64{}}
	if c.tls {
		if err := makeCert(&c, work); err != nil {
			return err
		}
	}

	// 1. The installation, from scratch.
	start := time.Now()
	inst, err := setup(ctx, c, work)
	if err != nil {
		return err
	}
	defer inst.cleanup()
	res.SetupSeconds = time.Since(start).Seconds()
	fmt.Printf("setup: %d users, keys, users file and one delivery per log in %.1f s\n", c.users, res.SetupSeconds)

	// 2. The servers.
	started := time.Now()
	srvs := make([]*server, c.servers)
	for i := range srvs {
		s, err := startServer(c, inst, work, i, 0, 0)
		if err != nil {
			return err
		}
		srvs[i] = s
	}
	defer func() {
		for _, s := range srvs {
			if s != nil {
				s.stop()
			}
		}
	}()
	for _, s := range srvs {
		res.ServerRSSBeforeDevicesMB = append(res.ServerRSSBeforeDevicesMB, rssMB(s.pid(), "VmRSS"))
	}
	// A server refuses requests signed before its start plus 30 s (the
	// restart rule, docs/API.md §2): devices that were connected before it
	// started would sign again; these connect once that has passed.
	time.Sleep(time.Until(started.Add(31 * time.Second)))

	// 3. The devices, each from its own loopback address.
	var errs sync.Map // kind -> *atomic.Int64
	countErr := func(kind string) {
		v, _ := errs.LoadOrStore(kind, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	var nextAddr atomic.Uint32
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		n := nextAddr.Add(1)
		// 127.1.0.1 upwards: one source address per connection.
		ip := net.IPv4(127, byte(1+n>>16), byte(n>>8), byte(n))
		// Probed when idle as a device's connections are (api.KeepAlive).
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second, KeepAliveConfig: api.KeepAlive()}
		return d.DialContext(ctx, network, addr)
	}
	tr := &http.Transport{DialContext: dialer, MaxIdleConns: 2*c.users + 100, MaxIdleConnsPerHost: 2*c.users + 100,
		IdleConnTimeout: 5 * time.Minute, DisableCompression: true}
	if c.tls {
		tr.TLSClientConfig = &tls.Config{RootCAs: c.tlsRoots, MinVersion: tls.VersionTLS12}
	}
	hc := &http.Client{Transport: tr}
	devs := make([]*device, c.users)
	var requests atomic.Int64
	var ready sync.WaitGroup
	ready.Add(c.users)
	start = time.Now()
	for i := range devs {
		cl, err := api.NewClient(srvs[i%c.servers].url, inst.names[i], inst.keys[i], hc)
		if err != nil {
			return err
		}
		d := &device{name: inst.names[i], server: i % c.servers, client: cl, got: make(chan time.Time, 1)}
		devs[i] = d
		delay := time.Duration(int64(c.ramp) * int64(i) / int64(c.users))
		go d.run(ctx, delay, c.wait, &requests, &ready, countErr)
	}
	if !waitGroup(&ready, c.ramp+2*time.Minute) {
		return fmt.Errorf("not every device read its log within %s", c.ramp+2*time.Minute)
	}
	res.RampSeconds = time.Since(start).Seconds()
	fmt.Printf("devices: %d up (each read its first entry, now long-polling with wait=%s) in %.1f s\n", c.users, c.wait, res.RampSeconds)
	time.Sleep(5 * time.Second) // the last reads turn into long-polls

	// 4. Idle: nothing is delivered; devices only renew their long-polls.
	t0 := make([]int64, len(srvs))
	for i, s := range srvs {
		t0[i] = cpuTicks(s.pid())
	}
	self0 := cpuTicks(os.Getpid())
	pg0 := pgTicks(inst.dsn)
	r0 := requests.Load()
	time.Sleep(c.idle)
	hz := 100.0 // CLK_TCK on Linux
	for i, s := range srvs {
		pct := float64(cpuTicks(s.pid())-t0[i]) / hz / c.idle.Seconds() * 100
		rss := rssMB(s.pid(), "VmRSS")
		res.ServerIdleCPUPct = append(res.ServerIdleCPUPct, pct)
		res.ServerRSSMB = append(res.ServerRSSMB, rss)
		res.ServerRSSPerDeviceKB = append(res.ServerRSSPerDeviceKB,
			(rss-res.ServerRSSBeforeDevicesMB[i])*1024/float64(c.users/c.servers))
		res.ServerThreads = append(res.ServerThreads, threads(s.pid()))
	}
	res.LoadCPUPct = float64(cpuTicks(os.Getpid())-self0) / hz / c.idle.Seconds() * 100
	if inst.dsn != "" {
		var d int64
		for pid, t1 := range pgTicks(inst.dsn) {
			if t0, ok := pg0[pid]; ok {
				d += t1 - t0
			}
		}
		res.PostgresCPUPct = float64(d) / hz / c.idle.Seconds() * 100
	}
	res.IdleRequestsPerSec = float64(requests.Load()-r0) / c.idle.Seconds()
	res.IdleSeconds = c.idle.Seconds()

	// 5. Pushes through the first server's LMTP.
	fromAck, fromEnd, cross, err := push(c, srvs[0].lmtp, devs)
	errs.Range(func(k, v any) bool {
		res.DeviceErrors[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	if err != nil {
		return fmt.Errorf("%w (device errors so far: %v)", err, res.DeviceErrors)
	}
	res.Pushes = len(fromAck)
	res.PushP50ms, res.PushP99ms, res.PushMaxms = pct(fromAck, 50), pct(fromAck, 99), pct(fromAck, 100)
	res.PushFromDataEndP99ms = pct(fromEnd, 99)
	if c.servers > 1 {
		var same, other []time.Duration
		for i, d := range fromAck {
			if cross[i] {
				other = append(other, d)
			} else {
				same = append(same, d)
			}
		}
		res.PushSameP99ms, res.PushCrossP99ms = pct(same, 99), pct(other, 99)
	}
	for _, s := range srvs {
		res.ServerPeakMB = append(res.ServerPeakMB, rssMB(s.pid(), "VmHWM"))
	}

	// 6. The restart of the first server.
	if c.restart {
		if res.Restart, err = restart(c, inst, work, srvs, devs, &requests, &errs); err != nil {
			return err
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAverage = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	cancel()
	report(res)
	if c.jsonOut {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	return nil
}

func report(r result) {
	fmt.Printf("store %s, %d server(s), %d devices\n", r.Store, r.Servers, r.Users)
	for i := range r.ServerRSSMB {
		fmt.Printf("server %d: RSS %.1f MB idle (%.1f MB before the devices, %.1f KB more per device), peak %.1f MB, %d threads; idle CPU %.2f%% of one core over %.0f s\n",
			i+1, r.ServerRSSMB[i], r.ServerRSSBeforeDevicesMB[i], r.ServerRSSPerDeviceKB[i], r.ServerPeakMB[i], r.ServerThreads[i],
			r.ServerIdleCPUPct[i], r.IdleSeconds)
	}
	fmt.Printf("devices renewed %.0f long-polls a second while idle; the devices' process used %.1f%% of one core\n",
		r.IdleRequestsPerSec, r.LoadCPUPct)
	if r.Store == "postgres" {
		fmt.Printf("the servers' PostgreSQL backends used %.2f%% of one core over the idle window\n", r.PostgresCPUPct)
	}
	fmt.Printf("push, LMTP 250 -> the device's read returns: %d deliveries, p50 %.1f ms, p99 %.1f ms, max %.1f ms (p99 from the end of DATA: %.1f ms)\n",
		r.Pushes, r.PushP50ms, r.PushP99ms, r.PushMaxms, r.PushFromDataEndP99ms)
	if r.Servers > 1 {
		fmt.Printf("push p99 to devices of the server that took the delivery %.1f ms, of the other server %.1f ms\n", r.PushSameP99ms, r.PushCrossP99ms)
	}
	if len(r.DeviceErrors) > 0 {
		fmt.Printf("device errors: %v\n", r.DeviceErrors)
	}
	if rr := r.Restart; rr != nil {
		fmt.Printf("restart of server 1: stop %.2f s, down %.2f s; the devices read again p50 %.2f s, p99 %.2f s, last %.2f s after the new process started; "+
			"its CPU until then %.2f s, peak RSS %.1f MB (%.1f MB after the pushes); %.1f requests per device from the stop to the last back\n",
			rr.StopSeconds, rr.DownSeconds, rr.BackP50s, rr.BackP99s, rr.BackMaxs, rr.ServerCPUSeconds, rr.ServerPeakMB, rr.ServerIdleRSSMB, rr.RequestsPerDevice)
		fmt.Printf("after the restart: %d pushes, p50 %.1f ms, p99 %.1f ms; errors the devices met in the restart: %v\n",
			rr.Pushes, rr.PushP50ms, rr.PushP99ms, rr.Errors)
	}
	fmt.Printf("load average at the end: %s\n", r.LoadAverage)
}

// install is the installation the servers run on.
type install struct {
	names     []string
	keys      []*keys.SecretKey
	usersFile string
	spoolSec  string
	spoolDir  string
	dsn       string // the fresh PostgreSQL database, if any
	cleanup   func()
}

func setup(ctx context.Context, c config, work string) (*install, error) {
	in := &install{cleanup: func() {}, spoolDir: filepath.Join(work, "spool")}
	spoolKey, err := keys.Generate(rand.Reader)
	if err != nil {
		return nil, err
	}
	in.spoolSec = filepath.Join(work, "spool.sec")
	if err := keys.WriteFiles(spoolKey, in.spoolSec, filepath.Join(work, "spool.pub"), keys.WriteOptions{Force: true}); err != nil {
		return nil, err
	}
	var users strings.Builder
	in.names = make([]string, c.users)
	in.keys = make([]*keys.SecretKey, c.users)
	for i := range in.names {
		k, err := keys.Generate(rand.Reader)
		if err != nil {
			return nil, err
		}
		in.names[i], in.keys[i] = fmt.Sprintf("d%05d", i), k
		fmt.Fprintf(&users, "%s %s\n", in.names[i], k.Public())
	}
	in.usersFile = filepath.Join(work, "users")
	if err := os.WriteFile(in.usersFile, []byte(users.String()), 0o600); err != nil {
		return nil, err
	}
	var store spool.Store
	switch c.store {
	case "sqlite":
		store, err = sqlitestore.Open(in.spoolDir, sqlitestore.Options{})
	case "postgres":
		db := fmt.Sprintf("cspool_devices_%d", os.Getpid())
		if err := psql(c.dsn, "CREATE DATABASE "+db); err != nil {
			return nil, err
		}
		in.cleanup = func() { psql(c.dsn, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)") }
		in.dsn = withDB(c.dsn, db)
		store, err = pgstore.Open(ctx, in.dsn, pgstore.Options{})
	default:
		return nil, fmt.Errorf("unknown store %q", c.store)
	}
	if err != nil {
		in.cleanup()
		return nil, err
	}
	defer store.Close()
	// One sealed delivery in every log, appended by 16 goroutines so that
	// group commit shares the fsyncs.
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < c.users; i = int(next.Add(1)) - 1 {
				cmd := &command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(),
					Body: fmt.Appendf(nil, "From: setup@example.org\r\nTo: %s@example.org\r\nSubject: welcome\r\n\r\nhello\r\n", in.names[i])}
				b, _, err := entry.Seal(cmd, spoolKey, in.keys[i].Public(), in.names[i], nil)
				if err == nil {
					_, err = store.Append(ctx, in.names[i], [][]byte{b})
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		in.cleanup()
		return nil, err
	}
	return in, nil
}

func psql(dsn, stmt string) error {
	out, err := exec.Command("psql", "-q", dsn, "-c", stmt).CombinedOutput()
	if err != nil {
		return fmt.Errorf("psql %q: %v: %s", stmt, err, out)
	}
	return nil
}

// withDB returns dsn (a URL) naming database db instead.
func withDB(dsn, db string) string {
	u, q, _ := strings.Cut(dsn, "?")
	if i := strings.LastIndex(u, "/"); i > len("postgres://") {
		u = u[:i]
	}
	if q != "" {
		return u + "/" + db + "?" + q
	}
	return u + "/" + db
}

// server is one running `cspool server`.
type server struct {
	cmd              *exec.Cmd
	url              string
	lmtp             string
	httpPort, lmtpPt int
	started          time.Time // just before the process started
	stopped          bool
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// makeCert writes a self-signed certificate for 127.0.0.1 and its key into
// work, for the servers, and puts it in the pool the devices verify with.
func makeCert(c *config, work string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	c.tlsCert, c.tlsKey = filepath.Join(work, "api.pem"), filepath.Join(work, "api.key")
	if err := os.WriteFile(c.tlsCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(c.tlsKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	c.tlsRoots = x509.NewCertPool()
	c.tlsRoots.AddCert(cert)
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startServer starts server i on the HTTP port hp and the LMTP port lp
// (0: a free one) and returns once both accept connections.
func startServer(c config, in *install, work string, i, hp, lp int) (*server, error) {
	var err error
	if hp == 0 {
		if hp, err = freePort(); err != nil {
			return nil, err
		}
	}
	if lp == 0 {
		if lp, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"server", "--port", strconv.Itoa(hp), "--users", in.usersFile, "--spool-key", in.spoolSec,
		"--lmtp", fmt.Sprintf("127.0.0.1:%d", lp)}
	if c.store == "postgres" {
		args = append(args, "--store", "postgres", "--dsn", in.dsn, "--spool-dir", work)
	} else {
		args = append(args, "--spool-dir", in.spoolDir)
	}
	scheme := "http"
	if c.tls {
		args = append(args, "--tls-cert", c.tlsCert, "--tls-key", c.tlsKey)
		scheme = "https"
	}
	args = append(args, strings.Fields(c.extra)...)
	cmd := exec.Command(c.cspool, args...)
	logf, err := os.OpenFile(filepath.Join(work, fmt.Sprintf("server%d.log", i+1)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, url: fmt.Sprintf("%s://127.0.0.1:%d", scheme, hp), lmtp: fmt.Sprintf("127.0.0.1:%d", lp),
		httpPort: hp, lmtpPt: lp, started: started}
	for range 200 {
		if conn, err := net.Dial("tcp", s.lmtp); err == nil {
			conn.Close()
			if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hp)); err == nil {
				conn.Close()
				return s, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("server %d did not start; see %s", i+1, logf.Name())
}

// restart stops the first server, leaves it down for c.down, starts it
// again on its ports, and measures the devices' return (restartResult).
func restart(c config, in *install, work string, srvs []*server, devs []*device, requests *atomic.Int64, errs *sync.Map) (*restartResult, error) {
	rr := &restartResult{Errors: map[string]int64{}}
	errsBefore := errCounts(errs)
	r0 := requests.Load()
	old := srvs[0]
	t := time.Now()
	old.stop()
	rr.StopSeconds = time.Since(t).Seconds()
	stopped := time.Now()
	// The old process answered its parked reads as it stopped: only reads
	// answered from now on are the new process's.
	restartAt.Store(stopped.UnixNano())
	fmt.Printf("restart: server 1 stopped in %.1f s; down for %s\n", rr.StopSeconds, c.down)
	time.Sleep(c.down)
	ns, err := startServer(c, in, work, 0, old.httpPort, old.lmtpPt)
	if err != nil {
		return nil, err
	}
	srvs[0] = ns
	rr.DownSeconds = ns.started.Sub(stopped).Seconds()
	want := 0
	for _, d := range devs {
		if d.server == 0 {
			want++
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	var backs []time.Duration
	for {
		backs = backs[:0]
		for _, d := range devs {
			if at := d.backAt.Load(); d.server == 0 && at != 0 {
				backs = append(backs, time.Duration(at-ns.started.UnixNano()))
			}
		}
		if len(backs) == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	hz := 100.0
	rr.ServerCPUSeconds = float64(cpuTicks(ns.pid())) / hz
	rr.ServerPeakMB = rssMB(ns.pid(), "VmHWM")
	rr.RequestsPerDevice = float64(requests.Load()-r0) / float64(want)
	rr.Back = len(backs)
	for k, v := range errCounts(errs) {
		if d := v - errsBefore[k]; d > 0 {
			rr.Errors[k] = d
		}
	}
	if len(backs) < want {
		return rr, fmt.Errorf("restart: %d of %d devices read again within 3 minutes (errors: %v)", len(backs), want, rr.Errors)
	}
	rr.BackP50s, rr.BackP99s, rr.BackMaxs = pct(backs, 50)/1000, pct(backs, 99)/1000, pct(backs, 100)/1000
	fmt.Printf("restart: all %d devices read again, the last %.2f s after the new process started\n", want, rr.BackMaxs)
	// The reads that returned turn into long-polls; then pushes again.
	time.Sleep(5 * time.Second)
	fromAck, _, _, err := push(c, ns.lmtp, devs)
	if err != nil {
		return rr, fmt.Errorf("restart: %w", err)
	}
	rr.Pushes = len(fromAck)
	rr.PushP50ms, rr.PushP99ms = pct(fromAck, 50), pct(fromAck, 99)
	rr.ServerIdleRSSMB = rssMB(ns.pid(), "VmRSS")
	return rr, nil
}

// errCounts is a copy of the devices' error counts.
func errCounts(errs *sync.Map) map[string]int64 {
	m := map[string]int64{}
	errs.Range(func(k, v any) bool {
		m[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return m
}

// device is one user's device after its first sync: it long-polls its log.
type device struct {
	name   string
	server int // index of the server it reads from
	client *api.Client
	got    chan time.Time // when a read returned new entries (latest only)
	// backAt is when a read sent after the restart phase began was first
	// answered (Unix nanoseconds; 0: not yet).
	backAt atomic.Int64
}

// restartAt is when the restart phase began (Unix nanoseconds; 0: it has
// not): the devices note their first answered read after it.
var restartAt atomic.Int64

func (d *device) run(ctx context.Context, delay, wait time.Duration, requests *atomic.Int64, ready *sync.WaitGroup, countErr func(string)) {
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		ready.Done()
		return
	}
	var pos uint64
	first, spread := true, true
	fails := 0
	failed := false // the last request failed: read without waiting next, as the daemon does
	for ctx.Err() == nil {
		w := wait
		switch {
		case first, failed:
			w = 0
		case spread:
			// The first long-poll waits a random part of the wait, so that
			// the renewals are spread over it as those of devices that came
			// up at different times, not bunched in the ramp.
			spread = false
			w = time.Duration(1+mrand.Int64N(max(1, int64(wait/time.Second)))) * time.Second
		}
		requests.Add(1)
		sent := time.Now().UnixNano()
		lr, err := d.client.ReadLog(ctx, pos, 1000, 4<<20, w)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			countErr(errKind(err))
			failed = true
			if errors.Is(err, api.ErrTransport) {
				// No answer: the daemon asks /v1/health until it
				// answers, then reads (syncer's pause).
				d.probe(ctx, requests, countErr)
				continue
			}
			fails++
			select {
			case <-time.After(time.Duration(min(fails, 10)) * 500 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		fails, failed = 0, false
		if r := restartAt.Load(); r != 0 && sent > r && d.backAt.Load() == 0 {
			// A read sent after the old process exited, so answered by
			// the new one.
			d.backAt.Store(time.Now().UnixNano())
		}
		if n := len(lr.Entries); n > 0 {
			pos = lr.Entries[n-1].Pos
			if first {
				first = false
				ready.Done()
				continue
			}
			now := time.Now()
			select {
			case <-d.got:
			default:
			}
			d.got <- now
		}
	}
	if first {
		ready.Done()
	}
}

// probe asks the spool's /v1/health until it answers, as the daemon's
// sync loop does: every 500 ms in the first minute of the outage, then
// every 5 s, each ±10%.
func (d *device) probe(ctx context.Context, requests *atomic.Int64, countErr func(string)) {
	down := time.Now()
	for ctx.Err() == nil {
		every := 500 * time.Millisecond
		if time.Since(down) >= time.Minute {
			every = 5 * time.Second
		}
		select {
		case <-time.After(every * time.Duration(90+mrand.IntN(21)) / 100):
		case <-ctx.Done():
			return
		}
		requests.Add(1)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second) // syncer's probeTimeout
		err := d.client.Health(pctx)
		cancel()
		if err == nil {
			return
		}
		countErr("probe: " + errKind(err))
	}
}

func errKind(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status != 0 {
		return strconv.Itoa(ae.Status)
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// push delivers c.pushes messages over LMTP, each to a random device, and
// returns the latencies from the 250 and from the end of DATA to the
// device's read returning it, and for each whether the device reads from
// another server than the one delivered to (the first).
func push(c config, addr string, devs []*device) (fromAck, fromEnd []time.Duration, cross []bool, err error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	lc := smtp.NewClientLMTP(conn)
	defer lc.Close()
	if err := lc.Hello("devices.example.org"); err != nil {
		return nil, nil, nil, err
	}
	body := "From: push@example.org\r\nSubject: push\r\n\r\n" + strings.Repeat("x", 1000) + "\r\n"
	deadline := time.Now().Add(time.Duration(c.pushes)*(c.pushEvery+time.Second) + time.Minute)
	for i := 0; i < c.pushes && time.Now().Before(deadline); i++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(devs))))
		d := devs[n.Int64()]
		select {
		case <-d.got:
		default:
		}
		if err := lc.Mail("push@example.org", nil); err != nil {
			return nil, nil, nil, err
		}
		if err := lc.Rcpt(d.name+"@example.org", nil); err != nil {
			return nil, nil, nil, err
		}
		w, err := lc.Data()
		if err != nil {
			return nil, nil, nil, err
		}
		if _, err := io.WriteString(w, body); err != nil {
			return nil, nil, nil, err
		}
		end := time.Now()
		if _, err := w.CloseWithLMTPResponse(); err != nil {
			return nil, nil, nil, fmt.Errorf("delivery %d: %w", i, err)
		}
		ack := time.Now()
		select {
		case got := <-d.got:
			fromAck = append(fromAck, max(0, got.Sub(ack)))
			fromEnd = append(fromEnd, got.Sub(end))
			cross = append(cross, d.server != 0)
		case <-time.After(time.Minute):
			return nil, nil, nil, fmt.Errorf("delivery %d to %s not pushed within a minute", i, d.name)
		}
		time.Sleep(c.pushEvery)
	}
	return fromAck, fromEnd, cross, lc.Quit()
}

func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return float64(s[max(i, 0)].Microseconds()) / 1000
}

func waitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// pgTicks returns the CPU ticks of every PostgreSQL backend connected to
// the database of dsn (the servers' pools and listeners), by process id.
func pgTicks(dsn string) map[int]int64 {
	if dsn == "" {
		return nil
	}
	out, err := exec.Command("psql", "-tA", dsn, "-c",
		"SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()").Output()
	if err != nil {
		return nil
	}
	m := map[int]int64{}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			m[pid] = cpuTicks(pid)
		}
	}
	return m
}

// cpuTicks is the process's user+system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func rssMB(pid int, field string) float64 {
	return statusKB(pid, field) / 1024
}

func threads(pid int) int { return int(statusKB(pid, "Threads")) }

func statusKB(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			v, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v
		}
	}
	return 0
}

// raiseFileLimit raises the soft limit of open files to the hard limit and
// fails if that is below need: every device holds a connection here and in
// a server, which inherits the limit.
func raiseFileLimit(need uint64) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("reading the open-file limit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return fmt.Errorf("raising the open-file limit to %d: %w", l.Max, err)
		}
	}
	if l.Cur < need {
		return fmt.Errorf("open-file limit %d (hard) is below the %d this run needs: raise it (ulimit -Hn as root) or use fewer --users", l.Cur, need)
	}
	return nil
}
