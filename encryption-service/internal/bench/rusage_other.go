//go:build !unix

package bench

import "time"

// processCPU returns -1: this platform's CPU time is not read.
func processCPU() time.Duration { return -1 }
