package deliver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
)

// The crash test re-executes the test binary as an LMTP server over a spool
// directory; these variables carry its configuration.
const (
	crashDirEnv   = "CSPOOL_TEST_CRASH_CHILD_DIR"
	crashSpoolEnv = "CSPOOL_TEST_CRASH_CHILD_SPOOL_KEY"
	crashUsersEnv = "CSPOOL_TEST_CRASH_CHILD_USERS" // "name=pubkey,..."
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild serves LMTP over the spool in dir until it is killed.
func crashChild(dir string) error {
	sk, err := keys.ParseSecret(os.Getenv(crashSpoolEnv))
	if err != nil {
		return err
	}
	users := StaticDirectory{}
	for _, kv := range strings.Split(os.Getenv(crashUsersEnv), ",") {
		name, pub, _ := strings.Cut(kv, "=")
		k, err := keys.ParsePublic(pub)
		if err != nil {
			return err
		}
		users[name] = k
	}
	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	l := NewLMTP(&Deliverer{Log: st, SpoolKey: sk, Users: users}, LMTPOptions{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return l.Serve(ln)
}

// sendOne delivers msg to rcpts over c and returns the recipients that got
// 250. An error means the connection is no longer usable.
func sendOne(c *smtp.Client, msg []byte, rcpts []string) ([]string, error) {
	if err := c.Mail("sender@example.net", nil); err != nil {
		return nil, err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return nil, err
		}
	}
	w, err := c.Data()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(msg); err != nil {
		return nil, err
	}
	resp, err := w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	if err != nil && !errors.As(err, &lerr) {
		// Replies read before the failure still count.
		var ok []string
		for r := range resp {
			ok = append(ok, r)
		}
		return ok, err
	}
	var ok []string
	for r := range resp {
		ok = append(ok, r)
	}
	return ok, nil
}

var tokenRE = regexp.MustCompile(`X-Token: (tok-[0-9]+-[0-9a-f]+)`)

func TestLMTPCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary")
	}
	const (
		maxMessages = 300
		conns       = 4
	)
	dir := t.TempDir()
	spoolKey := mustKey(t)
	userKeys := map[string]*keys.SecretKey{"alice": mustKey(t), "bob": mustKey(t)}
	var userEnv []string
	for u, k := range userKeys {
		userEnv = append(userEnv, u+"="+k.Public().String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		crashDirEnv+"="+dir,
		crashSpoolEnv+"="+spoolKey.String(),
		crashUsersEnv+"="+strings.Join(userEnv, ","))
	cmd.Stderr = testWriter{t}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, found := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !found {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not announce its address: %q, %v", line, err)
	}

	// Kill after a random number of acknowledged deliveries, so the child
	// dies in the middle of the stream; the timer bounds the wait.
	killAt := int64(10 + mrand.IntN(maxMessages-60))
	var (
		mu     sync.Mutex
		acked  = map[string]map[string]bool{"alice": {}, "bob": {}} // user -> tokens
		sent   = map[string]bool{}
		nAcked atomic.Int64
		next   atomic.Int64
		once   sync.Once
	)
	kill := func() { once.Do(func() { cmd.Process.Kill() }) }
	timer := time.AfterFunc(20*time.Second, kill)
	defer timer.Stop()
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return
			}
			c := smtp.NewClientLMTP(conn)
			defer c.Close()
			if c.Hello("crash.test") != nil {
				return
			}
			for {
				n := next.Add(1)
				if n > maxMessages {
					return
				}
				token := fmt.Sprintf("tok-%d-%016x", n, mrand.Uint64())
				msg := fmt.Sprintf("X-Token: %s\r\nSubject: crash %d\r\n\r\n%s\r\n", token, n, strings.Repeat("body ", 200))
				mu.Lock()
				sent[token] = true
				mu.Unlock()
				ok, err := sendOne(c, []byte(msg), []string{"alice@example.org", "bob@example.org"})
				mu.Lock()
				for _, r := range ok {
					user, _, _ := strings.Cut(r, "@")
					acked[user][token] = true
				}
				mu.Unlock()
				if nAcked.Add(int64(len(ok))) >= killAt {
					kill()
				}
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	kill()
	_ = cmd.Wait()
	t.Logf("killed after %d acknowledged deliveries (target %d), %d messages sent", nAcked.Load(), killAt, len(sent))
	if nAcked.Load() == 0 {
		t.Fatal("no delivery was acknowledged before the kill: the test checked nothing")
	}

	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatalf("reopening the spool after the crash: %v", err)
	}
	defer st.Close()
	for user, tokens := range acked {
		seen := map[string]int{}
		for _, o := range openLog(t, st, user, userKeys[user], spoolKey.Public()) {
			m := tokenRE.FindSubmatch(o.Cmd.Body)
			if m == nil {
				t.Fatalf("%s: entry without a token: %s", user, short(o.Cmd.Body))
			}
			tok := string(m[1])
			if !sent[tok] {
				t.Errorf("%s: entry with token %s that was never sent", user, tok)
			}
			seen[tok]++
		}
		for tok, n := range seen {
			if n != 1 {
				t.Errorf("%s: token %s stored %d times, want once", user, tok, n)
			}
		}
		for tok := range tokens {
			if seen[tok] != 1 {
				t.Errorf("%s: acknowledged token %s stored %d times, want once", user, tok, seen[tok])
			}
		}
		t.Logf("%s: %d acknowledged, %d stored", user, len(tokens), len(seen))
	}
}
