package recovery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
)

// countingTransport counts the bytes of request and response bodies.
type countingTransport struct {
	up, down atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.ContentLength > 0 {
		c.up.Add(req.ContentLength)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.down}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// counted gives the device a client whose traffic is counted.
func (d *device) counted(tb testing.TB) *countingTransport {
	tb.Helper()
	ct := &countingTransport{}
	var err error
	if d.client, err = api.NewClient("http://"+d.r.addr, user, d.r.userKey, &http.Client{Transport: ct}); err != nil {
		tb.Fatal(err)
	}
	return ct
}

// deliverBatch appends n deliveries of about size bytes, 500 to a request.
func (r *rig) deliverBatch(n, size int) []command.ID {
	r.t.Helper()
	var ids []command.ID
	var batch [][]byte
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := r.spool.Append(context.Background(), user, batch); err != nil {
			r.t.Fatal(err)
		}
		batch = nil
	}
	for range n {
		r.sent++
		body := append(message(r.sent), bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), size/66)...)
		b, id, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1700000000000 + int64(r.sent), Body: body},
			r.spoolKey, r.userKey.Public(), user, nil)
		if err != nil {
			r.t.Fatal(err)
		}
		batch, ids = append(batch, b), append(ids, id)
		if len(batch) == 500 {
			flush()
		}
	}
	flush()
	return ids
}

// BenchmarkRecover measures the recovery after a restore of a mailbox of
// 10,000 messages of about 2 KB, 1,000 entries of which (500 deliveries,
// 500 flag changes) are beyond the restored head, with 10 deliveries after
// the restore: cspool recover on the device that holds them all (time,
// bytes sent and received), then its adoption of the restoration and
// another such device's.
func BenchmarkRecover(b *testing.B) {
	for range b.N {
		b.StopTimer()
		r := newRig(b)
		a, o := r.device("a"), r.device("other")
		r.deliverBatch(9500, 2048)
		a.mustSync()
		backup := r.backup()
		ids := r.deliverBatch(500, 2048)
		a.mustSync()
		for i := 0; i < 500; i += 50 {
			var cmds []*command.Command
			for _, id := range ids[i : i+50] {
				cmds = append(cmds, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{id}})
			}
			a.change(cmds...)
		}
		o.mustSync()
		r.restore(backup)
		r.deliverBatch(10, 2048)
		if err := a.sync(); err == nil {
			b.Fatal("no alarm after the restore")
		}
		ct := a.counted(b)
		b.StartTimer()

		start := time.Now()
		rep, err := a.recover()
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		up, down := ct.up.Load(), ct.down.Load()
		a.start()
		start = time.Now()
		a.mustSync()
		adoptSelf := time.Since(start)
		oc := o.counted(b)
		o.start()
		start = time.Now()
		if err := o.sync(); err != nil {
			b.Fatal(err)
		}
		adoptOther := time.Since(start)

		b.StopTimer()
		if rep.Superseded != 1000 || rep.Bodies != 500 || rep.Messages != 10010 {
			b.Fatalf("report %+v: want 1,000 superseded entries, 500 bodies put back, 10,010 messages", rep)
		}
		b.ReportMetric(took.Seconds(), "recover-s")
		b.ReportMetric(float64(up), "recover-sent-B")
		b.ReportMetric(float64(down), "recover-received-B")
		b.ReportMetric(float64(rep.StateBytes), "restoration-B")
		b.ReportMetric(adoptSelf.Seconds(), "adopt-own-s")
		b.ReportMetric(adoptOther.Seconds(), "adopt-other-s")
		b.ReportMetric(float64(oc.down.Load()), "adopt-other-received-B")
		b.Logf("%s", fmt.Sprintf("%+v", *rep))
		r.stop()
		b.StartTimer()
	}
}
