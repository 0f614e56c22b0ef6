package deliver

import (
	"context"
	"fmt"

	"cspool/internal/keys"
)

// foldedDir is a StaticDirectory that also finds users by their folded
// names, as userdb.DB does.
type foldedDir StaticDirectory

func (d foldedDir) Lookup(ctx context.Context, user string) (keys.PublicKey, error) {
	return StaticDirectory(d).Lookup(ctx, user)
}

func (d foldedDir) LookupFolded(_ context.Context, folded string) (string, keys.PublicKey, error) {
	for name, k := range d {
		if keys.FoldCase(name) == folded {
			return name, k, nil
		}
	}
	return "", keys.PublicKey{}, fmt.Errorf("%q: %w", folded, keys.ErrUnknownUser)
}
