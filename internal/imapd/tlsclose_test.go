package imapd

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"cspool/internal/sendtest"
)

// A connection is closed from another goroutine than the one that reads
// it: go-imap's Server.Close, when the daemon stops, closes every
// connection while each one's reading goroutine may be putting TLS under
// it after STARTTLS. Close took the connection the swap replaces with no
// order between the two, a data race. Here the client reads the OK and
// then closes, with nothing else between the two goroutines, so under
// -race the old Close is reported every time.
func TestCloseBesideSTARTTLS(t *testing.T) {
	ca := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := ca.Leaf(t, t.TempDir())
	server, client := net.Pipe()
	defer client.Close()
	fc := newFrameConn(server)
	fc.startTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	read := make(chan error, 1)
	go func() {
		// Answers STARTTLS, puts TLS under the connection and waits
		// in the handshake for a client that never starts it.
		_, err := fc.Read(make([]byte, 512))
		read <- err
	}()
	if _, err := client.Write([]byte("a STARTTLS\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "a OK ") {
		t.Fatalf("STARTTLS answered %q, %v", line, err)
	}
	if err := fc.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-read; err == nil {
		t.Fatal("the read went on after Close")
	}
}
