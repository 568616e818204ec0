package bench

import (
	"os"
	"strconv"
	"strings"
)

// cpuSample is the machine's and this process's CPU time at one moment, in clock ticks, read from
// /proc (Linux). ok is false elsewhere.
type cpuSample struct {
	total, idle, self uint64
	ok                bool
}

func sampleCPU() cpuSample {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 9 || f[0] != "cpu" {
		return cpuSample{}
	}
	var s cpuSample
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuSample{}
		}
		s.total += n
		if i == 3 || i == 4 { // idle, iowait
			s.idle += n
		}
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return cpuSample{}
	}
	// The command name may hold spaces: fields are counted after its closing parenthesis.
	i := strings.LastIndexByte(string(self), ')')
	if i < 0 {
		return cpuSample{}
	}
	g := strings.Fields(string(self)[i+1:]) // state ppid … utime(12) stime(13)
	if len(g) < 14 {
		return cpuSample{}
	}
	utime, err1 := strconv.ParseUint(g[11], 10, 64)
	stime, err2 := strconv.ParseUint(g[12], 10, 64)
	if err1 != nil || err2 != nil {
		return cpuSample{}
	}
	s.self, s.ok = utime+stime, true
	return s
}

// othersShare returns the share of the machine's CPU time between a and b that other processes
// used (0 to 1), or -1 when unknown. Above a few percent, other work competed with the case.
func othersShare(a, b cpuSample) float64 {
	if !a.ok || !b.ok || b.total <= a.total {
		return -1
	}
	busy := float64((b.total - a.total) - (b.idle - a.idle))
	others := busy - float64(b.self-a.self)
	return max(0, min(1, others/float64(b.total-a.total)))
}
