package syncer

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"cspool/internal/command"
	"cspool/internal/spool"
)

// fileCheckpointer serves the spool's checkpoint only through
// CheckpointWriterTo, a few bytes at a time, and notes what it was written
// into.
type fileCheckpointer struct {
	StoreSource
	t       *testing.T
	into    string // the file's name
	renamed bool   // whether a file of that name existed while it was written
}

func (f *fileCheckpointer) Checkpoint(context.Context) (spool.Checkpoint, error) {
	f.t.Error("the checkpoint was asked for in memory")
	return spool.Checkpoint{}, errors.New("not in memory")
}

func (f *fileCheckpointer) CheckpointTo(ctx context.Context, w io.Writer) (uint64, int64, error) {
	cp, err := f.StoreSource.Checkpoint(ctx)
	if err != nil {
		return 0, 0, err
	}
	if file, ok := w.(*os.File); ok {
		f.into = file.Name()
		_, err := os.Stat(file.Name())
		f.renamed = err == nil
	}
	var n int64
	for b := cp.Data; len(b) > 0; {
		k, err := w.Write(b[:min(len(b), 1000)])
		n += int64(k)
		if err != nil {
			return 0, n, err
		}
		b = b[k:]
	}
	return cp.Pos, n, nil
}

// TestBootstrapFromFile: a source that writes the checkpoint out
// (api.Client.CheckpointTo) has it written into a file without a name in
// Config.TempDir, which the new device restores from: the state of the
// device that wrote it.
func TestBootstrapFromFile(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, msa := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	var ids []command.ID
	for i := range 40 {
		_, id := r.seal(r.spool, msg(i))
		ids = append(ids, id)
	}
	r.seal(r.user, &command.Command{Kind: command.Expunge, IDs: ids[:10]})
	r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`, "$Work"}, IDs: ids[10:20]})
	syncAll(t, a)
	if _, _, err := a.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	src := &fileCheckpointer{StoreSource: StoreSource{Store: r.log, User: "alice"}, t: t}
	b, msb := r.device("b", src, nil)
	tmp := t.TempDir()
	b.cfg.TempDir = tmp
	syncAll(t, b)
	if b.Status().Restores != 1 {
		t.Fatalf("new device restored %d times; want once, from the checkpoint", b.Status().Restores)
	}
	sameState(t, msa, msb)
	if filepath.Dir(src.into) != tmp || src.renamed {
		t.Errorf("checkpoint written into %q (a file of that name there: %v); want a file without a name in %s", src.into, src.renamed, tmp)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("%d files left in the temporary folder", len(left))
	}
}
