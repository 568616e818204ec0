// Command es-bench measures the encryption service against the gRPC and REST echo ceilings of
// the same transport; `make bench` runs it. See docs/performance.md.
//
// It needs BENCH_DATABASE_URL, a PostgreSQL URL for a role that may create databases: it creates
// a fresh database there and drops it at the end. Progress goes to stderr, the Markdown report to
// stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "es-bench:", err)
		os.Exit(1)
	}
}

// run parses args, creates a database, runs the harness and prints its report. The database URL
// comes from the environment only, since it may hold a password.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	def := bench.DefaultConfig()
	fs := flag.NewFlagSet("es-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", def.Duration, "measured time per case")
	warmup := fs.Duration("warmup", def.Warmup, "unmeasured time per case before it")
	concurrency := fs.String("concurrency", "1,16,64", "comma-separated numbers of concurrent callers")
	batch := fs.Int("batch", def.BatchSize, "items per batch call")
	payload := fs.Int("payload", def.PayloadBytes, "bytes of data per item")
	cases := fs.String("cases", "", `regular expression selecting cases by name, e.g. "gRPC encrypt single"`)
	busyRetries := fs.Int("busy-retries", def.BusyRetries, "measure a case again, up to this many times, when other processes used the CPU meanwhile")
	busyThreshold := fs.Float64("busy-threshold", def.BusyThreshold, "share of the CPU (0 to 1) other processes may use before a case is measured again")
	noCeilings := fs.Bool("no-ceilings", false, "with -cases: leave out the echo ceilings of the selected cases (to profile one case alone)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole process (service, clients, echo servers) to this file")
	memProfile := fs.String("memprofile", "", "write a profile of the allocations of the whole process during the run to this file (go tool pprof -sample_index=alloc_space)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := bench.Config{Duration: *duration, Warmup: *warmup, BatchSize: *batch, PayloadBytes: *payload, NoCeilings: *noCeilings,
		BusyRetries: *busyRetries, BusyThreshold: *busyThreshold, Progress: stderr}
	for _, s := range strings.Split(*concurrency, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-concurrency: %q is not a number", s)
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	if *cases != "" {
		if cfg.Only, err = regexp.Compile(*cases); err != nil {
			return fmt.Errorf("-cases: %w", err)
		}
	}
	server := getenv("BENCH_DATABASE_URL")
	if server == "" {
		return errors.New("BENCH_DATABASE_URL is not set: give a PostgreSQL URL for a role that may create databases (make bench uses scripts/dev-postgres.sh)")
	}
	var drop func(context.Context) error
	if cfg.DatabaseURL, drop, err = bench.CreateDatabase(ctx, server); err != nil {
		return err
	}
	defer func() {
		if derr := drop(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
	}()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		defer func() {
			if perr := writeHeapProfile(*memProfile); perr != nil && err == nil {
				err = perr
			}
		}()
	}
	start := time.Now()
	fmt.Fprintln(stderr, "es-bench: starting the service, the echo servers and the data (a fresh database)…")
	rep, err := bench.Run(ctx, cfg)
	if rep != nil {
		fmt.Fprintf(stderr, "es-bench: %d cases in %v\n\n", len(rep.Results), time.Since(start).Round(time.Second))
		rep.WriteMarkdown(stdout)
	}
	return err
}

// writeHeapProfile writes the allocation profile of the run so far to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
