//go:build !unix

package cli

import (
	"context"
	"os"
)

// lockFile does nothing where flock is not available: concurrent custos processes of one profile
// may then race on a refresh, which ends the session (log in again) but exposes nothing.
func lockFile(context.Context, *os.File) error { return nil }

func unlockFile(*os.File) {}
