package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The targets of the encryption service's issue, checked by every report.
const (
	targetEncryptRatio      = 0.75   // single encrypt over gRPC at 64 callers, against the gRPC echo
	targetEncryptCallers    = 64     //
	targetRewrapItemsPerSec = 100000 // batch rewrap, best of transports and concurrencies
)

// Target is one goal and how a run did against it.
type Target struct {
	Goal      string
	Measured  bool // false when the case did not run or the service does not offer it
	Met       bool
	Shortfall float64 // how far below the goal, as a fraction of it (0.2 = 20% short); 0 when met
	Detail    string
}

// Targets evaluates the report against the targets.
func (r *Report) Targets() []Target {
	enc := Target{Goal: fmt.Sprintf("single encrypt over gRPC at %d callers ≥ %.2f × the gRPC echo", targetEncryptCallers, targetEncryptRatio)}
	rew := Target{Goal: fmt.Sprintf("batch rewrap ≥ %s items/s", thousands(targetRewrapItemsPerSec))}
	var best *Result
	for i, res := range r.Results {
		switch {
		case res.Transport == GRPC && res.Op == Encrypt && res.Batch == 1 && res.Concurrency == targetEncryptCallers:
			if !res.OK() || res.Ratio == 0 {
				enc.Detail = "not measured: " + res.status()
				continue
			}
			enc.Measured, enc.Met = true, res.Ratio >= targetEncryptRatio
			enc.Detail = fmt.Sprintf("%.2f × (%s of %s ops/s)", res.Ratio,
				thousands(res.PerSecond()), thousands(res.PerSecond()/res.Ratio))
			if !enc.Met {
				enc.Shortfall = 1 - res.Ratio/targetEncryptRatio
			}
		case res.Op == Rewrap && res.Batch > 1:
			if res.OK() && (best == nil || res.PerSecond() > best.PerSecond()) {
				best = &r.Results[i]
			} else if best == nil && rew.Detail == "" {
				rew.Detail = "not measured: " + res.status()
			}
		}
	}
	if enc.Detail == "" {
		enc.Detail = "not measured: the case was not run"
	}
	if best != nil {
		per := best.PerSecond()
		rew.Measured, rew.Met = true, per >= targetRewrapItemsPerSec
		rew.Detail = fmt.Sprintf("best %s items/s (%s, c=%d, batches of %d)", thousands(per), best.Transport, best.Concurrency, best.Batch)
		if !rew.Met {
			rew.Shortfall = 1 - per/targetRewrapItemsPerSec
		}
	} else if rew.Detail == "" {
		rew.Detail = "not measured: no batch rewrap case was run"
	}
	return []Target{enc, rew}
}

// status says why a result has no numbers.
func (r Result) status() string {
	switch {
	case r.Unavailable != "":
		return r.Unavailable
	case r.Err != "":
		return "failed: " + r.Err
	case r.Items == 0:
		return "no call completed"
	}
	return "ok"
}

// WriteMarkdown writes the report as Markdown: the machine, the settings, a table of every case
// and the targets.
func (r *Report) WriteMarkdown(w io.Writer) {
	m, c := r.Machine, r.Config
	fmt.Fprintf(w, "Run of %s on %d CPUs (%s), %s, %s, %s; load average at the start %s.\n",
		m.Date.Format("2006-01-02 15:04 UTC"), m.CPUs, m.CPUModel, m.OS, m.GoVersion, m.PostgreSQL, m.LoadAverage)
	var conc []string
	for _, n := range c.Concurrency {
		conc = append(conc, strconv.Itoa(n))
	}
	again := "once"
	if c.BusyRetries > 0 {
		again = fmt.Sprintf("again, up to %d times, while other processes used more than %s of the CPU", c.BusyRetries, percent(c.BusyThreshold))
	}
	fmt.Fprintf(w, "Each case: %v measured after %v of warm-up (%s); payload %d bytes; batches of %d; callers %s.\n\n",
		c.Duration, c.Warmup, again, c.PayloadBytes, c.BatchSize, strings.Join(conc, ", "))
	fmt.Fprintln(w, "| transport | operation | items/call | callers | ops/s (items/s) | p50 | p99 | × echo | CPU/item | others' CPU |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, res := range r.Results {
		if !res.OK() {
			fmt.Fprintf(w, "| %s | %s | %d | %d | %s | | | | | |\n", res.Transport, res.Op, res.Batch, res.Concurrency, res.status())
			continue
		}
		ratio := "—"
		if res.Op != Echo && res.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", res.Ratio)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", res.Transport, res.Op, res.Batch, res.Concurrency,
			thousands(res.PerSecond()), ms(res.P50), ms(res.P99), ratio, micros(res.CPUPerItem), percent(res.OthersCPU))
	}
	fmt.Fprintln(w, "\nCPU/item: CPU time of the whole process (clients, service, echo servers) per item; the difference to "+
		"the echo case's is what the service adds. others' CPU: the share of the machine's CPU that other processes "+
		"used during the case; where it is more than a few percent, the case competed with them and its rates are low.")
	fmt.Fprintln(w, "\nTargets:")
	for _, t := range r.Targets() {
		verdict := "not measured"
		switch {
		case t.Met:
			verdict = "met"
		case t.Measured:
			verdict = fmt.Sprintf("MISSED by %.0f%%", t.Shortfall*100)
		}
		fmt.Fprintf(w, "- %s: %s — %s\n", t.Goal, t.Detail, verdict)
	}
}

// progressLine is one case's line while the run goes on.
func progressLine(r Result) string {
	if !r.OK() {
		return fmt.Sprintf("%-32s %s", r.Case.String(), r.status())
	}
	ratio := ""
	if r.Op != Echo && r.Ratio > 0 {
		ratio = fmt.Sprintf("  %.2f × echo", r.Ratio)
	}
	return fmt.Sprintf("%-32s %12s/s  p50 %s  p99 %s%s  CPU %s/item  (others' CPU %s)",
		r.Case.String(), thousands(r.PerSecond()), ms(r.P50), ms(r.P99), ratio, micros(r.CPUPerItem), percent(r.OthersCPU))
}

// percent formats a share, "?" when unknown.
func percent(f float64) string {
	if f < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", f*100)
}

// micros formats a CPU time in microseconds, "?" when unknown.
func micros(d time.Duration) string {
	if d <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
}

// ms formats a latency in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// thousands formats a rate rounded to a whole number, with thousands separated by commas.
func thousands(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
