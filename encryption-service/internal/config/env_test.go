package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestPrefixes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}},
		{" 10.0.0.0/8 , 192.0.2.7,2001:db8::/32 ", []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"}},
		{"2001:db8::1", []string{"2001:db8::1/128"}},
		{"::ffff:10.1.0.0/112", []string{"10.1.0.0/16"}}, // IPv4-mapped, as IPv4 connections are compared
	} {
		e := &env{getenv: getenvFrom(map[string]string{"X": tt.in})}
		got := e.prefixes("X")
		if err := e.err(); err != nil {
			t.Errorf("prefixes(%q) error %v", tt.in, err)
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if !slices.Equal(s, tt.want) {
			t.Errorf("prefixes(%q) = %v, want %v", tt.in, s, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"10.0.0.1/8", "did you mean 10.0.0.0/8"},
		{"10.0.0.0/33", "CIDR ranges"},
		{"example.org", "CIDR ranges"},
		{"10.0.0.0/8,,192.0.2.0/24", `got ""`},
		{"fe80::1%eth0", "CIDR ranges"},
		{"127.0.0.1", "loopback"},
		{"0.0.0.0/0", "loopback"},
		{"::/0", "loopback"},
		{"::1", "loopback"},
		{"::ffff:0:0/96", "loopback"},
	} {
		e := &env{getenv: getenvFrom(map[string]string{"X": tt.in})}
		got := e.prefixes("X")
		err := e.err()
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "X: ") {
			t.Errorf("prefixes(%q) = %v, error %v; want an error about X containing %q", tt.in, got, err, tt.want)
		}
	}
	// A bad entry is named and the good ones are still returned, so every mistake shows at once.
	e := &env{getenv: getenvFrom(map[string]string{"X": "10.0.0.0/8,nope,bad"})}
	if got := e.prefixes("X"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) || len(e.errs) != 2 {
		t.Errorf("prefixes with two bad entries = %v, errors %v; want the good one and two errors", got, e.errs)
	}
}
