// Command push measures push latency: from an LMTP delivery being
// acknowledged (250, so durable on the spool) to the untagged EXISTS in an
// IMAP client idling on the device daemon. It runs against an already
// running `cspool server --lmtp` and `cspool imap-server` (bench/push.sh
// starts them).
//
//	go run ./bench/push --lmtp 127.0.0.1:2424 --imap 127.0.0.1:1143 --user alice --password pw --count 200
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

func main() {
	lmtpAddr := flag.String("lmtp", "127.0.0.1:2424", "LMTP address of cspool server")
	imapAddr := flag.String("imap", "127.0.0.1:1143", "IMAP address of cspool imap-server")
	user := flag.String("user", "alice", "user")
	pass := flag.String("password", "", "IMAP password")
	count := flag.Int("count", 200, "deliveries")
	flag.Parse()
	if err := run(*lmtpAddr, *imapAddr, *user, *pass, *count); err != nil {
		fmt.Fprintln(os.Stderr, "push:", err)
		os.Exit(1)
	}
}

func run(lmtpAddr, imapAddr, user, pass string, count int) error {
	exists := make(chan uint32, 16)
	c, err := imapclient.DialInsecure(imapAddr, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(user, pass).Wait(); err != nil {
		return err
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return err
	}
	idle, err := c.Idle()
	if err != nil {
		return err
	}
	defer idle.Close()

	conn, err := net.Dial("tcp", lmtpAddr)
	if err != nil {
		return err
	}
	lc := smtp.NewClientLMTP(conn)
	defer lc.Close()
	if err := lc.Hello("push.example.org"); err != nil {
		return err
	}
	want := sel.NumMessages
	var lat []time.Duration
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < count && time.Now().Before(deadline); i++ {
		msg := fmt.Sprintf("From: push@example.org\r\nSubject: push %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 1000))
		if err := lc.Mail("push@example.org", nil); err != nil {
			return err
		}
		if err := lc.Rcpt(user+"@example.org", nil); err != nil {
			return err
		}
		w, err := lc.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte(msg)); err != nil {
			return err
		}
		if _, err := w.CloseWithLMTPResponse(); err != nil {
			return err
		}
		acked := time.Now()
		want++
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case n := <-exists:
				if n >= want {
					lat = append(lat, time.Since(acked))
					break wait
				}
			case <-timeout:
				return fmt.Errorf("no EXISTS %d within 10 s of delivery %d", want, i)
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("push latency over %d deliveries: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		len(lat), ms(q(0.5)), ms(q(0.99)), ms(lat[len(lat)-1]))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
