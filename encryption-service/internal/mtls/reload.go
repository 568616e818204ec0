package mtls

import (
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"
)

// reloader holds material loaded from files and reloads it, at most once per
// interval, when one of the files changed.
type reloader[T any] struct {
	files    []string
	interval time.Duration
	logger   *slog.Logger
	what     string
	load     func() (T, error)

	mu      sync.Mutex
	checked time.Time     // last time the files were examined
	stamps  []os.FileInfo // the files as they were when value was loaded
	failed  []os.FileInfo // the files as they were when a reload last failed
	value   T
}

// newReloader loads the material once; it fails if that load fails.
func newReloader[T any](files []string, interval time.Duration, logger *slog.Logger, what string, load func() (T, error)) (*reloader[T], error) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &reloader[T]{files: files, interval: interval, logger: logger, what: what, load: load}
	// Stat before loading: a change racing the load then shows up as a
	// difference at the next check instead of being missed.
	stamps, statErr := statAll(files)
	value, err := load()
	if err != nil {
		return nil, err // names the file and what it should hold
	}
	if statErr != nil {
		return nil, statErr
	}
	r.value, r.stamps, r.checked = value, stamps, time.Now()
	return r, nil
}

// current returns the material, reloading it first if the interval has passed
// and a file changed. A failed reload keeps the previous material.
func (r *reloader[T]) current() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.interval {
		return r.value
	}
	r.checked = now

	stamps, err := statAll(r.files)
	if err != nil {
		if !sameFiles(stamps, r.failed) {
			r.logger.Warn("mtls: cannot examine files, keeping previous material", "material", r.what, "error", err)
		}
		r.failed = stamps
		return r.value
	}
	if sameFiles(stamps, r.stamps) || sameFiles(stamps, r.failed) {
		return r.value
	}
	value, err := r.load()
	if err != nil {
		r.failed = stamps
		r.logger.Warn("mtls: reload failed, keeping previous material", "material", r.what, "error", err)
		return r.value
	}
	r.value, r.stamps, r.failed = value, stamps, nil
	r.logger.Info("mtls: reloaded", "material", r.what, "files", r.files)
	return r.value
}

// statAll stats every file, following symlinks. On error the slice is still
// full length, with nil for the files that could not be examined.
func statAll(files []string) ([]os.FileInfo, error) {
	out := make([]os.FileInfo, len(files))
	var firstErr error
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil && firstErr == nil {
			firstErr = err // *fs.PathError, names the file
		}
		out[i] = fi
	}
	return out, firstErr
}

// sameFiles reports whether a and b describe the same files unchanged: same
// file identity (device and inode on Unix), size and modification time.
func sameFiles(a, b []os.FileInfo) bool {
	return slices.EqualFunc(a, b, func(x, y os.FileInfo) bool {
		if x == nil || y == nil {
			return x == nil && y == nil
		}
		return os.SameFile(x, y) && x.Size() == y.Size() && x.ModTime().Equal(y.ModTime())
	})
}
