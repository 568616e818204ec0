package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestRunRefusesBadSettings(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		mention string
	}{
		{"no database", nil, nil, "BENCH_DATABASE_URL"},
		{"bad concurrency", []string{"-concurrency", "1,many"}, nil, "-concurrency"},
		{"bad case pattern", []string{"-cases", "("}, nil, "-cases"},
		{"unknown flag", []string{"-fast"}, nil, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("run(%q) = %v, want an error mentioning %q", tt.args, err, tt.mention)
			}
		})
	}
}
