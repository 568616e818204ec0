package apikey_test

import (
	"testing"

	"github.com/custos-platform/custos/core/internal/apikey"
)

// CheckFormat never panics, and whatever it accepts has the published shape.
func FuzzCheckFormat(f *testing.F) {
	f.Add(mustNew(f).Secret)
	f.Add("")
	f.Add("cas_")
	f.Add("cas_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_aaaaaa")
	f.Fuzz(func(t *testing.T, s string) {
		if apikey.CheckFormat(s) == nil && (len(s) != 54 || s[:4] != "cas_") {
			t.Fatalf("CheckFormat accepted %q", s)
		}
	})
}
