package faults

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Failures a client may see while a process is down or restarting.
var (
	lmtpTemporary = []string{"4", "conn: "}
	imapTemporary = []string{"NO [UNAVAILABLE]", "conn: "}
	// imapRaces: two devices moving or expunging the same message.
	imapRaces = []string{"NO [EXPUNGEISSUED]"}
	// imapOffline: after a fault of the spool, a change the device queued
	// meanwhile took UIDs the log gave to other messages, and the mailbox
	// got a new UIDVALIDITY under a session that had it selected
	// (imapRenumbered; the class is given only once the mailbox, selected
	// again, shows it).
	imapOffline = []string{imapRenumbered}
)

func joinLists(ls ...[]string) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l...)
	}
	return out
}

// pause sleeps a random time in [min, max).
func pause(r *rand.Rand, lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(r.Int64N(int64(hi-lo))))
}

// TestKillServer: kill -9 of the spool server at random moments under load,
// restarted on the same spool directory.
func TestKillServer(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	l := newLedger()
	ld := startLoad(t, c, l, loadOptions{maxMessages: 3000, pace: 5 * time.Millisecond, mutators: true})
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3; i++ {
		pause(r, 300*time.Millisecond, 1200*time.Millisecond)
		c.server.kill()
		pause(r, 100*time.Millisecond, 800*time.Millisecond)
		c.startServer()
	}
	time.Sleep(time.Second)
	ld.stop()
	t.Log(l.summary())
	l.checkErrors(t, lmtpTemporary, joinLists(imapTemporary, imapRaces, imapOffline))
	verify(t, c, l)
}

// TestKillDaemon: kill -9 of each device daemon in turn under load,
// restarted on the same database.
func TestKillDaemon(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	l := newLedger()
	ld := startLoad(t, c, l, loadOptions{maxMessages: 3000, pace: 5 * time.Millisecond, mutators: true})
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 4; i++ {
		d := c.devices[i%2]
		pause(r, 300*time.Millisecond, 1000*time.Millisecond)
		d.p.kill()
		pause(r, 50*time.Millisecond, 500*time.Millisecond)
		c.startDevice(d)
	}
	time.Sleep(time.Second)
	ld.stop()
	t.Log(l.summary())
	// Deliveries never see the daemons.
	l.checkErrors(t, nil, joinLists([]string{"conn: "}, imapRaces))
	verify(t, c, l)
}
