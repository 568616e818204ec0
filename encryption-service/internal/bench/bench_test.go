package bench

import (
	"context"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// TestRunSmoke runs the whole harness briefly, at one caller and small batches: every case runs
// against the real service and echo servers. It checks that the harness works, never how fast
// anything is.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the service: not in -short")
	}
	cfg := Config{
		DatabaseURL: testdb.New(t), Duration: 150 * time.Millisecond, Warmup: 20 * time.Millisecond,
		Concurrency: []int{1}, BatchSize: 5, PayloadBytes: 1024,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	var got []Case
	for _, r := range rep.Results {
		got = append(got, r.Case)
		// The service offers every method the harness calls, so every case is measured.
		if !r.OK() {
			t.Errorf("%s = %+v, want measured", r.Case, r)
		}
		if r.OK() && r.Op != Echo && r.Ratio <= 0 {
			t.Errorf("%s has no ratio to its echo ceiling", r.Case)
		}
		if r.OK() && runtime.GOOS == "linux" && (r.CPUPerItem <= 0 || r.OthersCPU < 0) {
			t.Errorf("%s: CPU/item %v, others' CPU %v, want both measured on Linux", r.Case, r.CPUPerItem, r.OthersCPU)
		}
		if r.OK() && (r.P50 <= 0 || r.P99 < r.P50) {
			t.Errorf("%s latencies p50 %v p99 %v, want 0 < p50 ≤ p99", r.Case, r.P50, r.P99)
		}
	}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	if want := cases(cfg); !slices.Equal(got, want) {
		t.Errorf("cases run = %v, want %v", got, want)
	}
	var md strings.Builder
	rep.WriteMarkdown(&md)
	for _, want := range []string{"| gRPC | encrypt | 1 | 1 |", "| REST | decrypt | 1 | 1 |", "| gRPC | echo | 5 | 1 |", "Targets:", "PostgreSQL"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("WriteMarkdown lacks %q:\n%s", want, md.String())
		}
	}
}

func TestCasesPutTheCeilingFirst(t *testing.T) {
	cfg := DefaultConfig()
	cs := cases(cfg)
	if len(cs) != 2*2*4*3 {
		t.Fatalf("cases(default) = %d cases, want 48", len(cs))
	}
	seen := map[Case]bool{}
	for _, c := range cs {
		if c.Op != Echo && !seen[c.ceiling()] {
			t.Errorf("%s runs before its ceiling %s", c, c.ceiling())
		}
		seen[c] = true
	}
}

func TestSelected(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Only = regexp.MustCompile(`^gRPC encrypt single c=64$`)
	var got []string
	for _, c := range cases(cfg) {
		if selected(cfg, c) {
			got = append(got, c.String())
		}
	}
	want := []string{"gRPC echo single c=64", "gRPC encrypt single c=64"}
	if !slices.Equal(got, want) {
		t.Errorf("selected = %q, want %q (the case and its ceiling)", got, want)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var d []time.Duration
		for _, n := range ns {
			d = append(d, time.Duration(n)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"none", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of four", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100", ms(1, 2, 3), 100, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestTargets(t *testing.T) {
	sec := time.Second
	encrypt := func(ratio float64) Result {
		return Result{Case: Case{GRPC, Encrypt, 1, 64}, Items: 7500, Elapsed: sec, Ratio: ratio}
	}
	rewrap := func(tr string, items int) Result {
		return Result{Case: Case{tr, Rewrap, 100, 16}, Items: items, Elapsed: sec}
	}
	unavailable := Result{Case: Case{GRPC, Rewrap, 100, 16}, Unavailable: "not available: 501"}
	tests := []struct {
		name      string
		results   []Result
		measured  [2]bool
		met       [2]bool
		shortfall [2]float64
	}{
		{"both met", []Result{encrypt(0.8), rewrap(GRPC, 150000)}, [2]bool{true, true}, [2]bool{true, true}, [2]float64{0, 0}},
		{"both missed", []Result{encrypt(0.6), rewrap(GRPC, 40000)}, [2]bool{true, true}, [2]bool{}, [2]float64{0.2, 0.6}},
		{"best rewrap counts", []Result{rewrap(GRPC, 40000), rewrap(REST, 120000)}, [2]bool{false, true}, [2]bool{false, true}, [2]float64{}},
		{"not available", []Result{unavailable}, [2]bool{}, [2]bool{}, [2]float64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := (&Report{Results: tt.results}).Targets()
			for i, g := range got {
				if g.Measured != tt.measured[i] || g.Met != tt.met[i] || abs(g.Shortfall-tt.shortfall[i]) > 1e-9 {
					t.Errorf("Targets()[%d] = %+v, want measured %v met %v shortfall %v", i, g, tt.measured[i], tt.met[i], tt.shortfall[i])
				}
			}
		})
	}
}

func abs(f float64) float64 { return max(f, -f) }

func TestHasItemError(t *testing.T) {
	tests := []struct {
		answer string
		want   bool
	}{
		{`{"results":[{"data":"x","error":null}]}`, false},
		{`{"results":[{"data":"x", "error": null}, {"error": {"code":3, "message":"bad"}}]}`, true},
		{`{"results":[{"error":{"code":5}}]}`, true},
		{`{"results":[]}`, false},
	}
	for _, tt := range tests {
		if got := hasItemError([]byte(tt.answer)); got != tt.want {
			t.Errorf("hasItemError(%s) = %v, want %v", tt.answer, got, tt.want)
		}
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 123456.7: "123,457", 1234567: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigFill(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults", Config{DatabaseURL: "postgres://x"}, ""},
		{"no database", Config{}, "DatabaseURL"},
		{"negative duration", Config{DatabaseURL: "postgres://x", Duration: -time.Second}, "negative"},
		{"unbounded duration", Config{DatabaseURL: "postgres://x", Duration: time.Hour}, "bounded"},
		{"zero callers", Config{DatabaseURL: "postgres://x", Concurrency: []int{0}}, "concurrency 0"},
		{"huge batch", Config{DatabaseURL: "postgres://x", BatchSize: 1 << 20}, "BatchSize"},
		{"negative retries", Config{DatabaseURL: "postgres://x", BusyRetries: -1}, "BusyRetries"},
		{"threshold over 1", Config{DatabaseURL: "postgres://x", BusyThreshold: 2}, "BusyThreshold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.fill()
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("fill() = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/bench_x?sslmode=disable"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=bench_x"},
	}
	for _, tt := range tests {
		if got := withDatabase(tt.in, "bench_x"); got != tt.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestRunCaseReportsUnavailable shows that a method answering UNIMPLEMENTED makes its case "not
// available" rather than a failure, which is how the harness met methods not built yet.
func TestRunCaseReportsUnavailable(t *testing.T) {
	unimplemented := func(context.Context, int, int) (int, error) {
		return 0, grpcErr(status.Error(codes.Unimplemented, "EncryptionService/RewrapBatch is not implemented"))
	}
	cfg := Config{DatabaseURL: "postgres://x", Duration: 10 * time.Millisecond}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	r := runCase(context.Background(), cfg, Case{GRPC, Rewrap, 100, 1}, unimplemented)
	if r.OK() || r.Err != "" || !strings.Contains(r.Unavailable, "501") {
		t.Errorf("runCase(unimplemented) = %+v, want not available (501) and no error", r)
	}
	if got := progressLine(r); !strings.Contains(got, "not available") {
		t.Errorf("progressLine = %q, want it to say not available", got)
	}
}
