// Command churn measures batching and compaction on a real spool (SQLite
// store behind the HTTP API on loopback) with real devices (mail store and
// sync loop over the API client), in one process:
//
//   - a first sync of N delivered messages: HTTP requests and bytes on the
//     wire with the sync loop's batching, against one entry per request;
//
//   - a STORE \Seen over all N messages: one command naming every message,
//     against one command per message (measured on a sample, scaled up);
//
//   - churn: FLAGS flag changes and moves as separate entries, then half the
//     messages expunged; the spool's bytes after a checkpoint and compaction
//     against the bytes of the live messages' entries;
//
//   - a new device's bootstrap from the checkpoint against a full replay of
//     the uncompacted log.
//
//     go run ./bench/churn -n 10000 -flags 100000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"cspool/bench/internal/rig"
	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/syncer"
)

func main() {
	n := flag.Int("n", 10000, "messages delivered")
	flags := flag.Int("flags", 100000, "flag changes and moves, one entry each")
	sample := flag.Int("sample", 300, "messages stored one command each, to scale up")
	size := flag.Int("size", 10<<10, "message size")
	flag.Parse()
	if err := run(*n, *flags, *sample, *size); err != nil {
		fmt.Fprintln(os.Stderr, "churn:", err)
		os.Exit(1)
	}
}

func run(n, flagChanges, sample, size int) error {
	ctx := context.Background()
	e, err := rig.New("cspool-churn-")
	if err != nil {
		return err
	}
	defer e.Close()
	liveBytes, err := e.Deliver(ctx, n, size, "churn")
	if err != nil {
		return err
	}

	// 1. First sync: batched against one entry per request.
	a, msa, ca, err := e.Device("a", e.URL, syncer.Config{CheckpointMin: -1})
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := a.SyncOnce(ctx); err != nil {
		return err
	}
	firstSync := time.Since(start)
	reqA, bytesA := ca.Snapshot()
	one, _, c1, err := e.Device("one", e.URL, syncer.Config{BatchCount: 1, CheckpointMin: -1})
	if err != nil {
		return err
	}
	if _, err := one.SyncOnce(ctx); err != nil {
		return err
	}
	req1, bytes1 := c1.Snapshot()
	fmt.Printf("first sync of %d messages: batched %d requests, %.1f MB on the wire, %.2f s; one entry per request %d requests, %.1f MB (%.0fx the requests)\n",
		n, reqA, rig.MB(bytesA), firstSync.Seconds(), req1, rig.MB(bytes1), float64(req1)/float64(max(reqA, 1)))

	// 2. STORE \Seen over every message: one command, against one per message.
	mb0, err := msa.MailboxByName(ctx, "INBOX")
	if err != nil {
		return err
	}
	var ids []command.ID
	if err := msa.Scan(ctx, mb0.ID, 0, func(m *mailstore.Message) error { ids = append(ids, m.ID); return nil }); err != nil {
		return err
	}
	go a.Run(ctx)
	r0, b0 := ca.Snapshot()
	if _, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: ids}); err != nil {
		return err
	}
	r1, b1 := ca.Snapshot()
	for _, id := range ids[:sample] {
		if _, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}}); err != nil {
			return err
		}
	}
	r2, b2 := ca.Snapshot()
	scale := float64(len(ids)) / float64(sample)
	fmt.Printf("STORE \\Seen over %d messages: one entry, %d requests, %.2f MB; one entry per message (scaled from %d): %.0f requests, %.1f MB\n",
		len(ids), r1-r0, rig.MB(b1-b0), sample, float64(r2-r1)*scale, rig.MB(int64(float64(b2-b1)*scale)))

	// 3. Churn: flag changes and moves, one entry each, then expunge half.
	churn := e.Commands()
	boxes := []string{"Archive", "Trash", "Work"}
	for i := 0; i < flagChanges; i++ {
		id := ids[i%len(ids)]
		var c *command.Command
		switch i % 4 {
		case 0, 1:
			c = &command.Command{Kind: command.SetFlags, Flags: []string{"$Label" + fmt.Sprint(i%7)}, IDs: []command.ID{id}}
		case 2:
			c = &command.Command{Kind: command.ClearFlags, Flags: []string{`\Seen`}, IDs: []command.ID{id}}
		case 3:
			c = &command.Command{Kind: command.Move, Mailbox: boxes[i%3], IDs: []command.ID{id}}
		}
		if err := churn.Add(ctx, c); err != nil {
			return err
		}
	}
	if err := churn.Add(ctx, &command.Command{Kind: command.Expunge, IDs: ids[:len(ids)/2]}); err != nil {
		return err
	}
	if err := churn.Flush(ctx); err != nil {
		return err
	}
	head, err := e.Store.Head(ctx, rig.User)
	if err != nil {
		return err
	}
	if err := a.WaitApplied(ctx, head); err != nil {
		return err
	}
	before, err := logBytes(ctx, e.Store)
	if err != nil {
		return err
	}
	// Keep a copy of the uncompacted log for the full-replay comparison.
	full, err := copyStore(ctx, e.Store, filepath.Join(e.Dir, "spool-full"))
	if err != nil {
		return err
	}
	defer full.Close()

	stats, cpPos, err := a.WriteCheckpoint(ctx)
	if err != nil {
		return err
	}
	after, err := logBytes(ctx, e.Store)
	if err != nil {
		return err
	}
	cp, err := e.Store.LatestCheckpoint(ctx, rig.User)
	if err != nil {
		return err
	}
	sn, err := msa.Snapshot(ctx)
	if err != nil {
		return err
	}
	live := 0
	for _, p := range sn.Keep() {
		live += liveBytes[p]
	}
	fi, _ := os.Stat(filepath.Join(e.Dir, "spool", "spool.db"))
	fmt.Printf("churn: %d entries (%.1f MB of entry bytes) before compaction; checkpoint at %d deleted %d entries (%.1f MB)\n",
		head, rig.MB(before), cpPos, stats.Deleted, rig.MB(stats.Bytes))
	fmt.Printf("after compaction: %.1f MB of entries + %.2f MB checkpoint = %.1f MB; live messages' entries %.1f MB: ratio %.3fx (database file %.1f MB)\n",
		rig.MB(after), rig.MB(int64(len(cp.Data))), rig.MB(after+int64(len(cp.Data))), rig.MB(int64(live)),
		float64(after+int64(len(cp.Data)))/float64(live), rig.MB(fi.Size()))

	// 4. Bootstrap: a new device from the checkpoint, against a full replay.
	c, _, cc, err := e.Device("new", e.URL, syncer.Config{CheckpointMin: -1})
	if err != nil {
		return err
	}
	start = time.Now()
	if _, err := c.SyncOnce(ctx); err != nil {
		return err
	}
	boot := time.Since(start)
	creq, cbytes := cc.Snapshot()
	url2, err := e.Serve(full)
	if err != nil {
		return err
	}
	d, _, cd, err := e.Device("replay", url2, syncer.Config{CheckpointMin: -1})
	if err != nil {
		return err
	}
	start = time.Now()
	if _, err := d.SyncOnce(ctx); err != nil {
		return err
	}
	replay := time.Since(start)
	dreq, dbytes := cd.Snapshot()
	fmt.Printf("new device: from the checkpoint %.2f s (%d requests, %.1f MB); full replay %.2f s (%d requests, %.1f MB); ratio %.2fx\n",
		boot.Seconds(), creq, rig.MB(cbytes), replay.Seconds(), dreq, rig.MB(dbytes), boot.Seconds()/replay.Seconds())
	return nil
}

// logBytes sums the entry bytes the store holds for alice.
func logBytes(ctx context.Context, st *sqlitestore.Store) (int64, error) {
	var total int64
	var after uint64
	for {
		es, err := st.Read(ctx, rig.User, after, 10000, 64<<20)
		if err != nil {
			return 0, err
		}
		if len(es) == 0 {
			return total, nil
		}
		for _, e := range es {
			total += int64(len(e.Data))
		}
		after = es[len(es)-1].Pos
	}
}

// copyStore copies alice's log into a new store.
func copyStore(ctx context.Context, st *sqlitestore.Store, dir string) (*sqlitestore.Store, error) {
	dst, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		return nil, err
	}
	var after uint64
	for {
		es, err := st.Read(ctx, rig.User, after, 5000, 64<<20)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			return dst, nil
		}
		batch := make([][]byte, len(es))
		for i, e := range es {
			if e.Pos != after+uint64(i)+1 {
				return nil, errors.New("log has holes: cannot copy")
			}
			batch[i] = e.Data
		}
		if _, err := dst.Append(ctx, rig.User, batch); err != nil {
			return nil, err
		}
		after = es[len(es)-1].Pos
	}
}
