package app

import (
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"
)

// TestRotationMovesLargeItems rotates a tenant whose 200 items of 22 KiB, each well within the
// vault's limits, would make a rewrap:batch message of 4.4 MiB as one page: over the encryption
// service's limit on a request (ES_MAX_REQUEST_BYTES, 4 MiB). Pages are cut by size, so the job
// moves them all, and a job started again finds nothing left.
func TestRotationMovesLargeItems(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("big", "PLATFORM")
	want := map[string]string{}
	for range 200 {
		data := randomText(t, 22<<10)
		got := p.must(200, "POST", "/v1/items", f.member, map[string]string{"name": "n", "data": data})
		want[got["id"].(string)] = data
	}

	rot := p.must(200, "POST", "/v1/keys/rotate", f.admin, map[string]any{})
	end := p.waitJob(f.admin, rot["job"].(map[string]any)["jobId"].(string), 60*time.Second)
	if end["state"] != "SUCCEEDED" || num(t, end["done"]) != 200 || num(t, end["total"]) != 200 {
		t.Errorf("job after rotation = %v, want SUCCEEDED with 200 moved", end)
	}
	again := p.must(200, "POST", "/v1/keys/jobs", f.admin, map[string]any{})
	if end := p.waitJob(f.admin, again["jobId"].(string), 60*time.Second); end["state"] != "SUCCEEDED" || num(t, end["total"]) != 0 {
		t.Errorf("job started again = %v, want SUCCEEDED with nothing to move", end)
	}
	wantSameItems(t, p.readAll(f.member), want)
}

// randomText returns n characters of base64 text from random bytes: it does not compress.
func randomText(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)[:n]
}
