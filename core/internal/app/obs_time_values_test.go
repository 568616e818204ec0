package app

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// notEchoed stands for a secret a caller sends where a time or a duration belongs.
const notEchoed = "Zq9CANARYs3cr3t"

// TestMalformedTimesAndDurationsAreNotEchoed: a malformed google.protobuf.Timestamp or Duration in
// a request body is refused with 400 naming the field, in core and in the encryption service,
// and neither the answer nor any log line quotes the value.
func TestMalformedTimesAndDurationsAreNotEchoed(t *testing.T) {
	p := startPlatform(t, nil)
	a := p.newTenant("acme", "PLATFORM")
	for _, tt := range []struct{ path, body, field string }{
		{"/v1/apikeys", `{"name":"k","scopes":["export"],"expiresAt":"` + notEchoed + `"}`, "expiresAt: invalid google.protobuf.Timestamp value (not shown"},
		{"/v1/apikeys", `{"name":"k","scopes":["export"],"expiresAt":"0000-12-31T00:00:00Z"}`, "expiresAt: google.protobuf.Timestamp value out of range (not shown"},
		{"/v1/apikeys/00000000-0000-0000-0000-000000000001:rotate", `{"overlap":"` + notEchoed + `"}`, "overlap: invalid google.protobuf.Duration value (not shown"},
	} {
		code, body := p.raw("POST", tt.path, a.owner, tt.body)
		if code != 400 || !strings.Contains(string(body), tt.field) || strings.Contains(string(body), notEchoed) || strings.Contains(string(body), "0000-12-31") {
			t.Errorf("core: POST %s %s = %d %s, want 400 naming %q without the value", tt.path, tt.body, code, body, tt.field)
		}
	}

	certs := testcerts.New(t)
	es := estest.Start(t, testdb.NewEmpty(t), certs)
	id, secret := es.CreateTenant(t, "t")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: certs.ClientConfig()}}
	req, err := http.NewRequest("POST", "https://"+es.HTTPAddr+"/v1/encryptions", strings.NewReader(`{"rotationPolicy":{"maxAge":"`+notEchoed+`"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tenant-Id", id)
	req.Header.Set("X-Tenant-Secret", secret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var answer struct{ Message string }
	_ = json.Unmarshal(b, &answer)
	if want := "rotationPolicy.maxAge: invalid google.protobuf.Duration value (not shown"; resp.StatusCode != 400 ||
		!strings.HasPrefix(answer.Message, want) || strings.Contains(string(b), notEchoed) {
		t.Errorf("encryption service: POST /v1/encryptions with a malformed maxAge = %d %s, want 400 starting %q without the value", resp.StatusCode, b, want)
	}

	for _, l := range append(append(strings.Split(p.core.logs.String(), "\n"), p.es.Logs()...), es.Logs()...) {
		if strings.Contains(l, notEchoed) || strings.Contains(l, "0000-12-31") {
			t.Errorf("a log line holds the value: %s", l)
		}
	}
}
