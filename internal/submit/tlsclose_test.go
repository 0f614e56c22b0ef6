package submit

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"cspool/internal/sendtest"
	"cspool/internal/smtpdata"
)

// A connection is closed from another goroutine than the one that reads
// it: go-smtp's Server.Close, when the daemon stops, closes every
// connection while each one's reading goroutine may be putting TLS under
// it after STARTTLS. Close took the connection without the lock the swap
// is made under, a data race the race detector reported once in a while
// at the end of TestStalledTLSHandshakeEnded. Here the client reads the
// 220 and then closes, with nothing else between the two goroutines, so
// under -race the old Close is reported every time.
func TestCloseBesideSTARTTLS(t *testing.T) {
	ca := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := ca.Leaf(t, t.TempDir())
	server, client := net.Pipe()
	defer client.Close()
	tc := &tlsConn{Conn: smtpdata.NewConn(server), raw: server,
		startTLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	read := make(chan error, 1)
	go func() {
		// Answers STARTTLS, puts TLS under the connection and waits
		// in the handshake for a client that never starts it.
		_, err := tc.Read(make([]byte, 512))
		read <- err
	}()
	if _, err := client.Write([]byte("STARTTLS\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("STARTTLS answered %q, %v", line, err)
	}
	if err := tc.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-read; err == nil {
		t.Fatal("the read went on after Close")
	}
}
