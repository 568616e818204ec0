// Package bench measures the encryption service against the transport it runs on.
//
// Run starts the real service in-process (app.Run) on loopback with mutual TLS 1.3 and a
// PostgreSQL database, creates a tenant and an AES-256-GCM PLATFORM key context, and drives
// encrypt, decrypt and rewrap of fixed-size payloads over gRPC and REST, singly and in batches, at
// each configured concurrency. In the same run it drives two echo servers with the same TLS
// configuration, payloads and concurrency: a gRPC service that returns the google.protobuf.
// BytesValue it is sent, and an HTTPS handler that returns the body it is sent. They are the
// transport's ceiling: each case is reported with its ratio to the matching echo case.
//
// Every case runs for a fixed duration after a warm-up; loops stop by themselves, and all traffic
// goes to 127.0.0.1. A case the service does not offer yet (501 UNIMPLEMENTED) is reported as not
// available. Benchmarks never assert timings: the report states the targets and whether this run
// met them.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sync"
	"time"
)

// Transports and operations of the cases.
const (
	GRPC = "gRPC"
	REST = "REST"

	Encrypt = "encrypt"
	Decrypt = "decrypt"
	Rewrap  = "rewrap"
	Echo    = "echo"
)

// Config is one run of the harness. DatabaseURL is required; zero values of the others take the
// defaults of DefaultConfig.
type Config struct {
	// DatabaseURL is a database the service may use alone; it migrates it on start.
	DatabaseURL string
	// Duration is how long each case is measured; Warmup how long it runs before, unmeasured.
	Duration, Warmup time.Duration
	// Concurrency lists the numbers of concurrent callers to measure.
	Concurrency []int
	// BatchSize is the number of items of the batch cases.
	BatchSize int
	// PayloadBytes is the size of the data of each item.
	PayloadBytes int
	// Only, when set, selects the cases whose String matches it, with their echo ceilings.
	Only *regexp.Regexp
	// BusyRetries is how many times a case is measured again when other processes used more than
	// BusyThreshold of the machine's CPU during it; the attempt they disturbed least is kept.
	// Zero measures once.
	BusyRetries int
	// BusyThreshold is the share of the CPU (0 to 1) other processes may use before a case is
	// measured again; zero means 0.10.
	BusyThreshold float64
	// NoCeilings leaves out the echo cases that Only did not select (for profiling one case alone).
	NoCeilings bool
	// Progress receives a line per case as it finishes; nil discards them.
	Progress io.Writer
}

// DefaultConfig returns the defaults: 2 s per case after 0.5 s of warm-up (on a quiet machine a
// whole run takes about two minutes), concurrency 1, 16 and 64, batches of 100, 1 KiB payloads,
// and up to two more attempts for a case that other processes disturbed.
func DefaultConfig() Config {
	return Config{
		Duration:      2 * time.Second,
		Warmup:        500 * time.Millisecond,
		Concurrency:   []int{1, 16, 64},
		BatchSize:     100,
		PayloadBytes:  1024,
		BusyRetries:   2,
		BusyThreshold: 0.10,
	}
}

func (c *Config) fill() error {
	d := DefaultConfig()
	if c.DatabaseURL == "" {
		return errors.New("bench: DatabaseURL is required")
	}
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Warmup == 0 {
		c.Warmup = d.Warmup
	}
	if len(c.Concurrency) == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.PayloadBytes == 0 {
		c.PayloadBytes = d.PayloadBytes
	}
	if c.BusyThreshold == 0 {
		c.BusyThreshold = d.BusyThreshold
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	switch {
	case c.Duration < 0 || c.Warmup < 0:
		return errors.New("bench: Duration and Warmup must not be negative")
	case c.Duration > 5*time.Minute:
		return errors.New("bench: Duration is bounded to 5 minutes per case")
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return errors.New("bench: BatchSize must be 1 to 10000")
	case c.PayloadBytes < 1 || c.PayloadBytes > 256<<10:
		return errors.New("bench: PayloadBytes must be 1 to 262144")
	case c.BusyRetries < 0 || c.BusyRetries > 10:
		return errors.New("bench: BusyRetries must be 0 to 10")
	case c.BusyThreshold < 0 || c.BusyThreshold > 1:
		return errors.New("bench: BusyThreshold must be 0 to 1")
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 1024 {
			return fmt.Errorf("bench: concurrency %d is not 1 to 1024", n)
		}
	}
	return nil
}

// Case is one measured configuration.
type Case struct {
	Transport   string // GRPC or REST
	Op          string // Encrypt, Decrypt, Rewrap or Echo
	Batch       int    // items per call; 1 for single calls
	Concurrency int    // concurrent callers
}

// String names the case, e.g. "gRPC encrypt batch=100 c=16".
func (c Case) String() string {
	mode := "single"
	if c.Batch > 1 {
		mode = fmt.Sprintf("batch=%d", c.Batch)
	}
	return fmt.Sprintf("%s %s %s c=%d", c.Transport, c.Op, mode, c.Concurrency)
}

// ceiling is the echo case that c is compared with.
func (c Case) ceiling() Case {
	c.Op = Echo
	return c
}

// Result is the measurement of one case.
type Result struct {
	Case
	Calls    int           // calls completed in the measured window
	Items    int           // items processed (Calls × Batch)
	Elapsed  time.Duration // measured window, until the last call returned
	P50, P99 time.Duration // latency of one call (of a whole batch for batch cases)
	// Ratio is items/s divided by that of the matching echo case; 0 when there is none.
	Ratio float64
	// CPUPerItem is the CPU time the whole process (clients, service, echo servers) spent per item
	// while the case was measured; 0 when unknown. Unlike the rates, it hardly depends on what else
	// the machine runs, and its difference to the echo case's is what the service adds.
	CPUPerItem time.Duration
	// OthersCPU is the share of the machine's CPU that other processes used while the case was
	// measured (0 to 1; -1 when unknown): the higher, the less the numbers say about the service.
	OthersCPU float64
	// Attempts is how many times the case was measured (see Config.BusyRetries).
	Attempts int
	// Unavailable says why the service does not offer the case (it answered 501); empty otherwise.
	Unavailable string
	// Err is the first failure of a call, which ends the case; empty when none failed.
	Err string
}

// PerSecond is items per second: operations per second for single calls.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Items) / r.Elapsed.Seconds()
}

// OK says whether the case was measured.
func (r Result) OK() bool { return r.Unavailable == "" && r.Err == "" && r.Items > 0 }

// Report is a whole run: the machine it ran on, the settings and every case.
type Report struct {
	Machine Machine
	Config  Config
	Results []Result
}

// Run runs every case of cfg and returns the report. It fails when the environment cannot be set
// up (database, service, echo servers, tenant, key context); a case that fails is reported in its
// Result and the run goes on. Cancelling ctx ends the run early, with the error of ctx.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	env, err := setUp(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer env.close()

	rep := &Report{Machine: env.machine, Config: cfg}
	echo := map[Case]float64{}
	for _, c := range cases(cfg) {
		if !selected(cfg, c) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		r := runCase(ctx, cfg, c, env.operation(c))
		if c.Op == Echo && r.OK() {
			echo[c] = r.PerSecond()
		}
		if ceil := echo[c.ceiling()]; ceil > 0 && r.OK() {
			r.Ratio = r.PerSecond() / ceil
		}
		rep.Results = append(rep.Results, r)
		fmt.Fprintln(cfg.Progress, progressLine(r))
	}
	return rep, ctx.Err()
}

// selected says whether a case runs: every case when cfg.Only is nil; else those it matches and
// the echo ceilings they are compared with.
func selected(cfg Config, c Case) bool {
	if cfg.Only == nil || cfg.Only.MatchString(c.String()) {
		return true
	}
	if c.Op != Echo || cfg.NoCeilings {
		return false
	}
	for _, op := range []string{Encrypt, Decrypt, Rewrap} {
		c.Op = op
		if cfg.Only.MatchString(c.String()) {
			return true
		}
	}
	return false
}

// cases lists every case in the order they run: per transport and batch size, the echo ceiling
// first so that the others can be compared with it.
func cases(cfg Config) []Case {
	var out []Case
	for _, tr := range []string{GRPC, REST} {
		for _, batch := range []int{1, cfg.BatchSize} {
			for _, op := range []string{Echo, Encrypt, Decrypt, Rewrap} {
				for _, n := range cfg.Concurrency {
					out = append(out, Case{Transport: tr, Op: op, Batch: batch, Concurrency: n})
				}
			}
			if cfg.BatchSize == 1 {
				break
			}
		}
	}
	return out
}

// operation performs one call of a case: worker is the caller's number, i its call count. It
// returns the items processed, or an error; errUnavailable wraps a 501 answer.
type operation func(ctx context.Context, worker, i int) (items int, err error)

// errUnavailable marks the answer of a method the service does not implement yet.
var errUnavailable = errors.New("not available")

// runCase probes the operation once, warms it up and measures it.
func runCase(ctx context.Context, cfg Config, c Case, op operation) Result {
	r := Result{Case: c, OthersCPU: -1}
	if _, err := op(ctx, 0, 0); err != nil {
		if errors.Is(err, errUnavailable) {
			r.Unavailable = err.Error()
		} else {
			r.Err = err.Error()
		}
		return r
	}
	if cfg.Warmup > 0 {
		if w := measure(ctx, c.Concurrency, cfg.Warmup, op); w.err != nil {
			r.Err = "warm-up: " + w.err.Error()
			return r
		}
	}
	for attempt := 1; ; attempt++ {
		before, cpu := sampleCPU(), processCPU()
		m := measure(ctx, c.Concurrency, cfg.Duration, op)
		others, used := othersShare(before, sampleCPU()), processCPU()-cpu
		if m.err != nil {
			r.Err, r.Attempts = m.err.Error(), attempt
			return r
		}
		if attempt == 1 || others < r.OthersCPU {
			r.Calls, r.Items, r.Elapsed = len(m.latencies), m.items, m.elapsed
			r.P50, r.P99 = percentile(m.latencies, 50), percentile(m.latencies, 99)
			r.OthersCPU, r.CPUPerItem = others, 0
			if cpu >= 0 && m.items > 0 {
				r.CPUPerItem = used / time.Duration(m.items)
			}
		}
		r.Attempts = attempt
		if others < 0 || others <= cfg.BusyThreshold || attempt > cfg.BusyRetries || ctx.Err() != nil {
			return r
		}
		fmt.Fprintf(cfg.Progress, "%-32s other processes used %s of the CPU: measuring again\n", c.String(), percent(others))
	}
}

type measurement struct {
	latencies []time.Duration // sorted
	items     int
	elapsed   time.Duration
	err       error
}

// callGrace bounds how long a call started before the deadline may still take.
const callGrace = 30 * time.Second

// measure runs op from n callers until d has passed, each calling again as soon as its call
// returns. Calls in flight at the deadline complete and count.
func measure(ctx context.Context, n int, d time.Duration, op operation) measurement {
	ctx, cancel := context.WithTimeout(ctx, d+callGrace)
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	var (
		mu      sync.Mutex
		all     []time.Duration
		items   int
		firstEr error
		wg      sync.WaitGroup
	)
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			got := 0
			var err error
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				var k int
				if k, err = op(ctx, w, i); err != nil {
					break
				}
				lat = append(lat, time.Since(t0))
				got += k
			}
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			items += got
			if err != nil && firstEr == nil {
				firstEr = err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(all)
	return measurement{latencies: all, items: items, elapsed: elapsed, err: firstEr}
}

// percentile returns the p-th percentile (nearest rank) of sorted latencies; 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}
