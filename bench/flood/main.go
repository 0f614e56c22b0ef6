// Command flood measures what a stranger's flood costs the legitimate
// callers of the spool's HTTP API: the latency of users' reads and appends
// and of the spool key's deliveries, unloaded and while another process
// sends requests signed with keys nobody registered, as fast as it can.
//
// The server (SQLite store on disk, a users file, the HTTP API on loopback
// through its connection limit, its log written to a file as in production)
// and the legitimate callers run in this process. The flooder is this
// program again, started with -flood, in a process of its own: it signs
// requests for a real user's log with fresh keys ahead of time, then sends
// them over -conns connections until told to stop. Rounds alternate an
// unloaded phase and a flooded one; the table gives each round and the
// medians.
//
//	go run ./bench/flood -rounds 5 -phase 10s                  # as deployed
//	go run ./bench/flood -rounds 5 -phase 10s -refusal-rate -1 # answers never held
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/userdb"
)

func main() {
	floodURL := flag.String("flood", "", "run as the flooder against this server URL (used by the benchmark itself)")
	conns := flag.Int("conns", 32, "flooder: connections")
	nkeys := flag.Int("keys", 20000, "flooder: fresh keys, one request signed with each, sent in a cycle")
	rounds := flag.Int("rounds", 5, "rounds of an unloaded and a flooded phase")
	phase := flag.Duration("phase", 10*time.Second, "length of each phase")
	users := flag.Int("users", 4, "legitimate users, each reading and appending")
	interval := flag.Duration("interval", 20*time.Millisecond, "pause between one caller's requests")
	floodProcs := flag.Int("flood-procs", 0, "GOMAXPROCS of the flooder; 0: as this process")
	floodNice := flag.Bool("flood-nice", false, "run the flooder at nice 19, as if its CPU were not the server's")
	refusalRate := flag.Int("refusal-rate", 0, "the server's api.Config.RefusalRate: 0 the default (20), -1 off")
	cpuProfile := flag.String("cpuprofile", "", "write the server process's CPU profile of the first flooded phase to this file")
	flag.Parse()
	profile = *cpuProfile
	var err error
	if *floodURL != "" {
		if *floodNice {
			err = syscall.Setpriority(syscall.PRIO_PROCESS, 0, 19)
		}
		if err == nil {
			err = flood(*floodURL, *conns, *nkeys)
		}
	} else {
		err = run(*rounds, *phase, *users, *interval, *conns, *nkeys, *floodProcs, *floodNice, *refusalRate)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

// flood signs one request with each of nkeys fresh keys, says "ready", and
// sends them in a cycle over conns connections until stdin closes; then it
// prints how many it sent and their statuses.
func flood(url string, conns, nkeys int) error {
	headers := make([]string, nkeys)
	for i := range headers {
		k, err := keys.Generate(rand.Reader)
		if err != nil {
			return err
		}
		req, err := http.NewRequest("GET", url+"/v1/users/user0/head", nil)
		if err != nil {
			return err
		}
		if err := api.SignRequest(req, nil, k, time.Now()); err != nil {
			return err
		}
		headers[i] = req.Header.Get("Authorization")
	}
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Minute)
	defer stop()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	fmt.Println("ready")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		statuses = map[int]int{}
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/users/user0/head", nil)
				req.Header.Set("Authorization", headers[int(next.Add(1))%nkeys])
				resp, err := hc.Do(req)
				status := 0 // no answer
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	n := 0
	for _, c := range statuses {
		n += c
	}
	fmt.Printf("sent %d %.0f/s %v\n", n, float64(n)/took.Seconds(), statuses)
	return nil
}

// caller is one legitimate caller's loop.
type caller struct {
	name string
	op   func(ctx context.Context, i int) error
}

// sample is what the legitimate callers saw in one phase, and the CPU time
// this process (the server and the callers) used meanwhile.
type sample struct {
	lat      []time.Duration
	failures map[string]int
	cpu      time.Duration
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (s *sample) p(q float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	slices.Sort(s.lat)
	return s.lat[min(len(s.lat)-1, int(q*float64(len(s.lat))))]
}

// measure runs every caller, one request per interval each, for d.
func measure(callers []caller, d, interval time.Duration) *sample {
	s := &sample{failures: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cpu0 := cpuTime()
	defer func() { s.cpu = cpuTime() - cpu0 }()
	for _, c := range callers {
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				start := time.Now()
				err := c.op(context.Background(), i)
				took := time.Since(start)
				mu.Lock()
				s.lat = append(s.lat, took)
				if err != nil {
					msg := err.Error()
					var ae *api.Error
					if errors.As(err, &ae) {
						msg = fmt.Sprintf("%s %d", c.name, ae.Status)
					}
					s.failures[msg]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return s
}

func run(rounds int, phase time.Duration, nusers int, interval time.Duration, conns, nkeys, floodProcs int, floodNice bool, refusalRate int) error {
	dir, err := os.MkdirTemp("", "cspool-flood-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	spoolKey, err := keys.Generate(rand.Reader)
	if err != nil {
		return err
	}
	userKeys := make([]*keys.SecretKey, nusers)
	var list strings.Builder
	for i := range userKeys {
		if userKeys[i], err = keys.Generate(rand.Reader); err != nil {
			return err
		}
		fmt.Fprintf(&list, "user%d %s\n", i, userKeys[i].Public())
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(list.String()), 0o600); err != nil {
		return err
	}
	users, err := userdb.Load(filepath.Join(dir, "users"), nil)
	if err != nil {
		return err
	}
	store, err := sqlitestore.Open(filepath.Join(dir, "spool"), sqlitestore.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	// Started an hour ago, as a server that has been running a while: the
	// flood is refused for its keys, not by the restart rule.
	apiSrv := api.NewServer(api.Config{Store: store, Users: users, SpoolKey: spoolKey.Public(),
		Logger: slog.New(slog.NewTextHandler(logFile, nil)), Started: time.Now().Add(-time.Hour), RefusalRate: refusalRate})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: apiSrv, ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(apiSrv.Listener(ln))
	defer srv.Close()
	url := "http://" + ln.Addr().String()

	var callers []caller
	body := make([]byte, 200)
	for i, k := range userKeys {
		name := fmt.Sprintf("user%d", i)
		c, err := api.NewClient(url, name, k, nil)
		if err != nil {
			return err
		}
		callers = append(callers, caller{name, func(ctx context.Context, i int) error {
			if i%2 == 0 {
				_, err := c.Append(ctx, name, [][]byte{body})
				return err
			}
			_, _, err := c.Read(ctx, uint64(max(0, i/2-10)), 10, 0, 0)
			return err
		}})
	}
	delivery, err := api.NewClient(url, "", spoolKey, nil)
	if err != nil {
		return err
	}
	// The server takes from the spool key only entries sealed to the user.
	mail := make([][]byte, nusers)
	for i, k := range userKeys {
		c := &command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: body}
		if mail[i], _, err = entry.Seal(c, spoolKey, k.Public(), fmt.Sprintf("user%d", i), nil); err != nil {
			return err
		}
	}
	callers = append(callers, caller{"spool", func(ctx context.Context, i int) error {
		_, err := delivery.Append(ctx, fmt.Sprintf("user%d", i%nusers), [][]byte{mail[i%nusers]})
		return err
	}})
	// Warm up: connections, the store, and the restart rule's first second.
	measure(callers, 2*time.Second, interval)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	held := "answers to refusals held beyond 20 a second per address (the default)"
	if refusalRate < 0 {
		held = "answers to refusals never held"
	} else if refusalRate > 0 {
		held = fmt.Sprintf("answers to refusals held beyond %d a second per address", refusalRate)
	}
	fmt.Printf("%d users and the spool key, one request each per %v; flooder: %d connections, %d fresh keys, nice %v; %s; %v phases\n\n",
		nusers, interval, conns, nkeys, floodNice, held, phase)
	fmt.Println("| round | unloaded p50 | unloaded p99 | flooded p50 | flooded p99 | p99 ratio | flood rate | CPU of this process, unloaded → flooded | legitimate failures |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	var ratios []float64
	var base, loaded []time.Duration
	for r := 1; r <= rounds; r++ {
		quiet := measure(callers, phase, interval)
		cmd := exec.Command(self, "-flood", url, "-conns", fmt.Sprint(conns), "-keys", fmt.Sprint(nkeys), fmt.Sprintf("-flood-nice=%v", floodNice))
		if floodProcs > 0 {
			cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", floodProcs))
		}
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		out := bufio.NewScanner(stdout)
		if !out.Scan() || out.Text() != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("flooder did not start: %q", out.Text())
		}
		if profile != "" && r == 1 {
			f, err := os.Create(profile)
			if err != nil {
				return err
			}
			pprof.StartCPUProfile(f)
		}
		flooded := measure(callers, phase, interval)
		if profile != "" && r == 1 {
			pprof.StopCPUProfile()
		}
		stdin.Close()
		report := ""
		for out.Scan() {
			report += out.Text()
		}
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("flooder: %w", err)
		}
		rate := report
		if f := strings.Fields(report); len(f) >= 3 {
			rate = f[2]
		}
		cpu := fmt.Sprintf("%.2f s → %.2f s", quiet.cpu.Seconds(), flooded.cpu.Seconds())
		ratio := float64(flooded.p(0.99)) / float64(quiet.p(0.99))
		ratios = append(ratios, ratio)
		base, loaded = append(base, quiet.p(0.99)), append(loaded, flooded.p(0.99))
		fails := fmt.Sprint(flooded.failures)
		if len(flooded.failures)+len(quiet.failures) == 0 {
			fails = "none"
		} else if len(quiet.failures) > 0 {
			fails += fmt.Sprintf(" (unloaded: %v)", quiet.failures)
		}
		fmt.Printf("| %d | %v | %v | %v | %v | %.2fx | %s | %s | %s |\n", r, ms(quiet.p(0.5)), ms(quiet.p(0.99)),
			ms(flooded.p(0.5)), ms(flooded.p(0.99)), ratio, rate, cpu, fails)
		fmt.Fprintf(os.Stderr, "round %d flooder: %s\n", r, report)
	}
	slices.Sort(ratios)
	slices.Sort(base)
	slices.Sort(loaded)
	fmt.Printf("\nmedians: unloaded p99 %v, flooded p99 %v, ratio %.2fx (median of the rounds' ratios)\n",
		ms(base[len(base)/2]), ms(loaded[len(loaded)/2]), ratios[len(ratios)/2])
	return nil
}

// profile is the -cpuprofile file.
var profile string

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
