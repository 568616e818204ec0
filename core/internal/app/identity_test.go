package app

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/password"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
	"github.com/custos-platform/custos/core/internal/token"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

const (
	rootName = "root"
	rootPass = "root-password-long-enough"
)

// platform is core started through Run in front of a real encryption service (a subprocess).
type platform struct {
	tb     testing.TB
	core   *instance
	es     *estest.Service
	client *http.Client
	conn   *grpc.ClientConn
}

// startPlatform starts the encryption service and core, with cheap password hashing and a short
// lockout so that tests stay fast; extra overrides core's configuration.
func startPlatform(tb testing.TB, extra map[string]string) *platform {
	tb.Helper()
	return startPlatformWith(tb, extra, nil)
}

// startPlatformWith is startPlatform with extra environment for the encryption service too.
func startPlatformWith(tb testing.TB, extra, esEnv map[string]string) *platform {
	tb.Helper()
	certs := testcerts.New(tb)
	es := estest.StartWith(tb, testdb.NewEmpty(tb), certs, esEnv)
	env := map[string]string{
		"CORE_DATABASE_URL":        testdb.New(tb),
		"CORE_GRPC_ADDR":           "127.0.0.1:0",
		"CORE_HTTP_ADDR":           "127.0.0.1:0",
		"CORE_TLS_CERT_FILE":       certs.ServerCertFile,
		"CORE_TLS_KEY_FILE":        certs.ServerKeyFile,
		"CORE_ES_ADDR":             es.GRPCAddr,
		"CORE_ES_SERVER_NAME":      "localhost",
		"CORE_ES_CA_FILE":          certs.CAFile,
		"CORE_ES_CLIENT_CERT_FILE": certs.ClientCertFile,
		"CORE_ES_CLIENT_KEY_FILE":  certs.ClientKeyFile,
		"CORE_ES_ADMIN_TOKEN":      es.AdminToken,
		"CORE_SECRET_KEYS":         testSecretKeys,
		"CORE_ADMIN_USERNAME":      rootName,
		"CORE_ADMIN_PASSWORD":      rootPass,
		"CORE_PASSWORD_MEMORY_KIB": "8192",
		"CORE_PASSWORD_ITERATIONS": "1",
		"CORE_LOG_LEVEL":           "debug",
	}
	for k, v := range extra {
		env[k] = v
	}
	inst := startWithEnv(tb, env, certs)
	waitReady(tb, inst)
	p := &platform{tb: tb, core: inst, es: es, client: inst.httpClient(certs.ClientConfigNoCert())}
	p.conn = inst.grpcConn(tb, certs.ClientConfigNoCert())
	return p
}

// cred is how a caller authenticates: as HTTP headers (gRPC metadata has the same names).
type cred map[string]string

func bearer(tok string) cred { return cred{"Authorization": "Bearer " + tok} }

// call sends a REST request and decodes the JSON object answered.
func (p *platform) call(method, path string, c cred, body any) (int, map[string]any) {
	p.tb.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			p.tb.Fatal(err)
		}
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequest(method, "https://"+p.core.httpAddr+path, rd)
	if err != nil {
		p.tb.Fatal(err)
	}
	for k, v := range c {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.tb.Fatalf("%s %s = %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		// Streams answer newline-delimited objects; the first one tells.
		first, _, _ := strings.Cut(string(raw), "\n")
		if json.Unmarshal([]byte(first), &got) != nil {
			p.tb.Fatalf("%s %s: body %q is not JSON", method, path, raw)
		}
	}
	return resp.StatusCode, got
}

// must is call that fails the test unless the status is want.
func (p *platform) must(want int, method, path string, c cred, body any) map[string]any {
	p.tb.Helper()
	code, got := p.call(method, path, c, body)
	if code != want {
		p.tb.Fatalf("%s %s = %d %v, want %d", method, path, code, got, want)
	}
	return got
}

// login logs username in without MFA and returns its access and refresh tokens.
func (p *platform) login(username, password string) (string, string) {
	p.tb.Helper()
	got := p.must(200, "POST", "/v1/auth/login", nil, map[string]string{"username": username, "password": password})
	if got["mfaRequired"] == true {
		p.tb.Fatalf("login %s needs MFA", username)
	}
	return got["accessToken"].(string), got["refreshToken"].(string)
}

// grpcCtx carries c as gRPC metadata.
func grpcCtx(c cred) context.Context {
	md := metadata.MD{}
	for k, v := range c {
		md.Set(strings.ToLower(k), v)
	}
	return metadata.NewOutgoingContext(context.Background(), md)
}

// tenantFixture is a tenant with one user of each role and one API key of each scope.
type tenantFixture struct {
	id                     string
	owner, admin, member   cred
	export, rotate, manage cred
	memberID               string
}

func (p *platform) newTenant(name, keyMode string) tenantFixture {
	p.tb.Helper()
	root, _ := p.login(rootName, rootPass)
	t := p.must(200, "POST", "/v1/tenants", bearer(root), map[string]any{"name": name, "keyMode": keyMode})
	f := tenantFixture{id: t["tenantId"].(string)}
	users := map[string]*cred{"owner": &f.owner, "admin": &f.admin, "member": &f.member}
	for _, role := range []string{"owner", "admin", "member"} {
		u := p.must(200, "POST", "/v1/tenants/"+f.id+"/users", bearer(root), map[string]any{
			"username": name + "-" + role, "password": "password-of-" + role, "role": role,
		})
		if role == "member" {
			f.memberID = u["userId"].(string)
		}
		tok, _ := p.login(name+"-"+role, "password-of-"+role)
		*users[role] = bearer(tok)
	}
	keys := map[string]*cred{"export": &f.export, "keys:rotate": &f.rotate, "users:manage": &f.manage}
	for scope, dst := range keys {
		k := p.must(200, "POST", "/v1/apikeys", f.owner, map[string]any{"name": "key " + scope, "scopes": []string{scope}})
		*dst = cred{"X-Api-Key": k["apiKey"].(string), "X-Api-Secret": k["apiSecret"].(string)}
	}
	return f
}

// TestAccessTable checks every row of the design's access table, for every kind of caller, over
// REST and over gRPC. Allowed calls reach the service (which may answer 501 until its behaviour is
// built); refused ones get 403 (or 401 when unauthenticated) from the one policy interceptor.
func TestAccessTable(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	root, _ := p.login(rootName, rootPass)
	platformAdmin := bearer(root)

	type row struct {
		name   string
		rest   func(c cred) int
		grpc   func(ctx context.Context) error
		allows map[string]bool
	}
	rest := func(method, path string, body any) func(c cred) int {
		return func(c cred) int { code, _ := p.call(method, path, c, body); return code }
	}
	vault := corev1.NewVaultServiceClient(p.conn)
	keys := corev1.NewKeyServiceClient(p.conn)
	users := corev1.NewUserServiceClient(p.conn)
	tenants := corev1.NewTenantServiceClient(p.conn)
	export := corev1.NewExportServiceClient(p.conn)
	rows := []row{
		{"vault items (plaintext)", rest("GET", "/v1/items", nil),
			func(ctx context.Context) error {
				_, err := vault.ListItems(ctx, &corev1.ListItemsRequest{})
				return err
			},
			map[string]bool{"member": true, "admin": true, "owner": true}},
		{"create vault item", rest("POST", "/v1/items", map[string]string{"name": "n", "data": "d"}),
			func(ctx context.Context) error {
				_, err := vault.CreateItem(ctx, &corev1.CreateItemRequest{Name: "n", Data: "d"})
				return err
			},
			map[string]bool{"member": true, "admin": true, "owner": true}},
		{"export encrypted blobs", rest("GET", "/v1/export", nil),
			func(ctx context.Context) error {
				s, err := export.Export(ctx, &corev1.ExportRequest{})
				if err == nil {
					_, err = s.Recv()
				}
				return err
			},
			map[string]bool{"member": true, "admin": true, "owner": true, "export": true}},
		{"rotate tenant keys", rest("POST", "/v1/keys/rotate", map[string]string{}),
			func(ctx context.Context) error {
				_, err := keys.RotateKeys(ctx, &corev1.RotateKeysRequest{})
				return err
			},
			map[string]bool{"admin": true, "owner": true, "keys:rotate": true}},
		{"manage users", rest("GET", "/v1/tenants/"+f.id+"/users", nil),
			func(ctx context.Context) error {
				_, err := users.ListUsers(ctx, &corev1.ListUsersRequest{TenantId: f.id})
				return err
			},
			map[string]bool{"admin": true, "owner": true, "platform": true, "users:manage": true}},
		{"manage tenants", rest("GET", "/v1/tenants", nil),
			func(ctx context.Context) error {
				_, err := tenants.ListTenants(ctx, &corev1.ListTenantsRequest{})
				return err
			},
			map[string]bool{"platform": true}},
	}
	callers := map[string]cred{
		"member": f.member, "admin": f.admin, "owner": f.owner, "platform": platformAdmin,
		"export": f.export, "keys:rotate": f.rotate, "users:manage": f.manage,
	}
	for _, r := range rows {
		for who, c := range callers {
			want := r.allows[who]
			t.Run(r.name+"/"+who+"/REST", func(t *testing.T) {
				code := r.rest(c)
				if want && (code == 401 || code == 403) {
					t.Errorf("%s as %s = %d, want it allowed", r.name, who, code)
				}
				if !want && code != 403 {
					t.Errorf("%s as %s = %d, want 403", r.name, who, code)
				}
			})
			t.Run(r.name+"/"+who+"/gRPC", func(t *testing.T) {
				err := r.grpc(grpcCtx(c))
				code := status.Code(err)
				if want && (code == codes.Unauthenticated || code == codes.PermissionDenied) {
					t.Errorf("%s as %s = %v, want it allowed", r.name, who, err)
				}
				if !want && code != codes.PermissionDenied {
					t.Errorf("%s as %s = %v, want PermissionDenied", r.name, who, err)
				}
			})
		}
		t.Run(r.name+"/anonymous", func(t *testing.T) {
			if code := r.rest(nil); code != 401 {
				t.Errorf("%s without credentials = %d, want 401", r.name, code)
			}
		})
	}

	// A machine is told why it may not touch the vault.
	_, got := p.call("GET", "/v1/items", f.export, nil)
	if msg, _ := got["message"].(string); !strings.Contains(msg, "machine credentials may not") {
		t.Errorf("machine on the vault: message %q, want it to say machine credentials may not", msg)
	}
	// Another tenant's users are not visible, not even to its admin.
	g := p.newTenant("globex", "PLATFORM")
	if code, _ := p.call("GET", "/v1/tenants/"+f.id+"/users", g.admin, nil); code != 404 {
		t.Errorf("globex admin listing acme's users = %d, want 404", code)
	}
	if code, _ := p.call("POST", "/v1/users/"+f.memberID+":disable", g.manage, map[string]string{}); code != 404 {
		t.Errorf("globex machine disabling acme's member = %d, want 404", code)
	}
	// A machine manages members only: one that could make admins could make itself one, and so
	// gain what the policy keeps from machines (API keys, the audit trail).
	if code, got := p.call("POST", "/v1/tenants/"+f.id+"/users", f.manage, map[string]any{
		"username": "acme-bot-admin", "password": "bot-admin-password", "role": "admin",
	}); code != 403 || !strings.Contains(fmt.Sprint(got["message"]), "only members") {
		t.Errorf("machine creating an admin = %d %v, want 403 saying machines manage only members", code, got)
	}
	botMember := p.must(200, "POST", "/v1/tenants/"+f.id+"/users", f.manage, map[string]any{
		"username": "acme-bot-member", "password": "bot-member-password",
	})["userId"].(string)
	if code, _ := p.call("POST", "/v1/users/"+botMember+":setRole", f.manage, map[string]string{"role": "admin"}); code != 403 {
		t.Errorf("machine promoting a member to admin = %d, want 403", code)
	}
	otherAdmin := p.must(200, "POST", "/v1/tenants/"+f.id+"/users", f.owner, map[string]any{
		"username": "acme-admin-2", "password": "admin-2-password", "role": "admin",
	})["userId"].(string)
	for op, body := range map[string]map[string]string{":disable": {}, ":setRole": {"role": "member"}} {
		if code, _ := p.call("POST", "/v1/users/"+otherAdmin+op, f.manage, body); code != 403 {
			t.Errorf("machine %s on an admin = %d, want 403", op, code)
		}
	}
	if code, _ := p.call("DELETE", "/v1/users/"+otherAdmin, f.manage, nil); code != 403 {
		t.Errorf("machine deleting an admin = %d, want 403", code)
	}
	p.must(200, "POST", "/v1/users/"+botMember+":disable", f.manage, map[string]string{})
	// An admin cannot make owners; an owner can.
	if code, _ := p.call("POST", "/v1/users/"+f.memberID+":setRole", f.admin, map[string]string{"role": "owner"}); code != 403 {
		t.Errorf("admin promoting to owner = %d, want 403", code)
	}
	p.must(200, "POST", "/v1/users/"+f.memberID+":setRole", f.owner, map[string]string{"role": "admin"})
	p.must(200, "GET", "/v1/tenants/"+f.id+"/users", f.member, nil)
	// A demotion takes effect at once, for tokens issued before it too.
	p.must(200, "POST", "/v1/users/"+f.memberID+":setRole", f.owner, map[string]string{"role": "member"})
	if code, _ := p.call("GET", "/v1/tenants/"+f.id+"/users", f.member, nil); code != 403 {
		t.Errorf("demoted user listing users = %d, want 403", code)
	}
}

// forged returns a token with the given header and claims, signed by sign (or unsigned).
func forged(header, claims map[string]any, sign func(string) string) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	unsigned := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return unsigned + "." + sign(unsigned)
}

func TestTokensAreCheckedStrictly(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	access := strings.TrimPrefix(f.member["Authorization"], "Bearer ")
	parts := strings.Split(access, ".")
	rawClaims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(rawClaims, &claims); err != nil {
		t.Fatal(err)
	}
	jwks := p.must(200, "GET", "/.well-known/jwks.json", nil, nil)
	key := jwks["keys"].([]any)[0].(map[string]any)
	if key["kty"] != "OKP" || key["crv"] != "Ed25519" || key["alg"] != "EdDSA" || key["kid"] == "" {
		t.Errorf("JWKS key = %v, want an Ed25519 signing key with a kid", key)
	}
	pub, _ := base64.RawURLEncoding.DecodeString(key["x"].(string))

	tampered := map[string]any{}
	for k, v := range claims {
		tampered[k] = v
	}
	tampered["role"] = "owner"
	tamperedPayload, _ := json.Marshal(tampered)

	for name, tok := range map[string]string{
		"tampered payload": parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedPayload) + "." + parts[2],
		"tampered signature": parts[0] + "." + parts[1] + "." + strings.Map(func(r rune) rune {
			if r == 'A' {
				return 'B'
			}
			return 'A'
		}, parts[2]),
		"alg none": forged(map[string]any{"alg": "none", "typ": "JWT", "kid": key["kid"]}, claims, func(string) string { return "" }),
		"HS256 with the public key": forged(map[string]any{"alg": "HS256", "typ": "JWT", "kid": key["kid"]}, claims, func(s string) string {
			m := hmac.New(sha256.New, pub)
			m.Write([]byte(s))
			return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
		}),
		"garbage": "not.a.token",
	} {
		if code, _ := p.call("GET", "/v1/me", bearer(tok), nil); code != 401 {
			t.Errorf("%s: GET /v1/me = %d, want 401", name, code)
		}
	}
	if code, _ := p.call("GET", "/v1/me", f.member, nil); code != 200 {
		t.Errorf("the genuine token: GET /v1/me = %d, want 200", code)
	}
}

func TestPasswordChangeEndsEverySession(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	other, _ := p.login("acme-member", "password-of-member") // a second session
	got := p.must(200, "POST", "/v1/auth/password", f.member, map[string]string{
		"currentPassword": "password-of-member", "newPassword": "a-brand-new-password", "newPasswordHint": "new",
	})
	for name, c := range map[string]cred{"the changing session's old token": f.member, "another session": bearer(other)} {
		if code, _ := p.call("GET", "/v1/me", c, nil); code != 401 {
			t.Errorf("%s after the password change = %d, want 401", name, code)
		}
	}
	fresh := got["tokens"].(map[string]any)["accessToken"].(string)
	p.must(200, "GET", "/v1/me", bearer(fresh), nil)
	if code, _ := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "acme-member", "password": "password-of-member"}); code != 401 {
		t.Errorf("login with the old password = %d, want 401", code)
	}
	p.login("acme-member", "a-brand-new-password")
	// A wrong current password changes nothing.
	if code, _ := p.call("POST", "/v1/auth/password", bearer(fresh), map[string]string{"currentPassword": "wrong-password-x", "newPassword": "another-new-password"}); code != 401 {
		t.Errorf("password change with a wrong current password = %d, want 401", code)
	}
}

func TestRefreshTokenReuseRevokesTheFamily(t *testing.T) {
	p := startPlatform(t, nil)
	p.newTenant("acme", "PLATFORM")
	_, r1 := p.login("acme-member", "password-of-member")
	second := p.must(200, "POST", "/v1/auth/refresh", nil, map[string]string{"refreshToken": r1})
	r2, a2 := second["refreshToken"].(string), second["accessToken"].(string)
	p.must(200, "GET", "/v1/me", bearer(a2), nil)

	if code, _ := p.call("POST", "/v1/auth/refresh", nil, map[string]string{"refreshToken": r1}); code != 401 {
		t.Fatalf("reusing a refresh token = %d, want 401", code)
	}
	if code, _ := p.call("POST", "/v1/auth/refresh", nil, map[string]string{"refreshToken": r2}); code != 401 {
		t.Errorf("the family's newest refresh token after a reuse = %d, want 401", code)
	}
	if code, _ := p.call("GET", "/v1/me", bearer(a2), nil); code != 401 {
		t.Errorf("the family's access token after a reuse = %d, want 401", code)
	}
	// Logout ends a session the same way.
	_, r3 := p.login("acme-member", "password-of-member")
	p.must(200, "POST", "/v1/auth/logout", nil, map[string]string{"refreshToken": r3})
	if code, _ := p.call("POST", "/v1/auth/refresh", nil, map[string]string{"refreshToken": r3}); code != 401 {
		t.Errorf("refresh after logout = %d, want 401", code)
	}
}

func TestTOTP(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	enrol := p.must(200, "POST", "/v1/auth/totp/enroll", f.member, map[string]string{"password": "password-of-member"})
	secret := enrol["secret"].(string)
	if !strings.HasPrefix(enrol["otpauthUri"].(string), "otpauth://totp/") || enrol["qrPng"] == "" {
		t.Errorf("enroll = %v, want an otpauth URI and a QR image", enrol)
	}
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	confirmed := p.must(200, "POST", "/v1/auth/totp/confirm", f.member, map[string]string{"code": code})
	recovery := confirmed["recoveryCodes"].([]any)
	if len(recovery) != 10 {
		t.Fatalf("confirm gave %d recovery codes, want 10", len(recovery))
	}
	// Enabling MFA ended the session that did it.
	if code, _ := p.call("GET", "/v1/me", f.member, nil); code != 401 {
		t.Errorf("old token after enabling MFA = %d, want 401", code)
	}

	challenge := func() string {
		got := p.must(200, "POST", "/v1/auth/login", nil, map[string]string{"username": "acme-member", "password": "password-of-member"})
		if got["mfaRequired"] != true || got["accessToken"] != "" {
			t.Fatalf("login with MFA on = %v, want only an MFA challenge", got)
		}
		return got["mfaToken"].(string)
	}
	// The code used to confirm is spent already: a replay.
	if c, got := p.call("POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": challenge(), "code": code}); c != 401 {
		t.Errorf("replayed TOTP code = %d %v, want 401", c, got)
	}
	// The next time step's code works once.
	next, _ := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
	p.must(200, "POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": challenge(), "code": next})
	if c, _ := p.call("POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": challenge(), "code": next}); c != 401 {
		t.Errorf("the same code a second time = %d, want 401", c)
	}
	// A recovery code works once.
	rc := recovery[0].(string)
	p.must(200, "POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": challenge(), "code": rc})
	if c, _ := p.call("POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": challenge(), "code": rc}); c != 401 {
		t.Errorf("a used recovery code = %d, want 401", c)
	}
	// An MFA token is not an access token.
	if c, _ := p.call("GET", "/v1/me", bearer(challenge()), nil); c != 401 {
		t.Errorf("MFA token used as access token = %d, want 401", c)
	}
}

func TestLockoutEngagesAndReleases(t *testing.T) {
	p := startPlatform(t, map[string]string{"CORE_LOGIN_MAX_FAILURES": "3", "CORE_LOGIN_LOCKOUT": "2s"})
	p.newTenant("acme", "PLATFORM")
	for _, user := range []string{"acme-member", "nobody-at-all"} {
		for range 3 {
			if c, _ := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": user, "password": "wrong-password-x"}); c != 401 {
				t.Fatalf("wrong password for %s = %d, want 401", user, c)
			}
		}
		c, got := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": user, "password": "password-of-member"})
		if c != 429 || !strings.Contains(got["message"].(string), "try again in") {
			t.Errorf("login of %s after 3 failures = %d %v, want 429 saying when to try again", user, c, got)
		}
	}
	time.Sleep(2100 * time.Millisecond)
	p.login("acme-member", "password-of-member")
}

// TestThrottleHoldsAgainstParallelRequests: attempts are counted before the credential is
// checked, so a burst sent at once gets no more checks than the limit — for passwords and for
// TOTP codes, which are cheap to guess in bulk otherwise — while right credentials do not use up
// the client address's allowance.
func TestThrottleHoldsAgainstParallelRequests(t *testing.T) {
	p := startPlatform(t, map[string]string{"CORE_LOGIN_MAX_FAILURES": "3"}) // addresses: 30
	f := p.newTenant("acme", "PLATFORM")

	// More right logins from one address than it may fail: none is refused.
	for i := range 35 {
		if c, got := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "acme-owner", "password": "password-of-owner"}); c != 200 {
			t.Fatalf("right login %d from one address = %d %v, want 200: successes must not count", i+1, c, got)
		}
	}

	burst := func(path string, body map[string]string) map[int]int {
		t.Helper()
		var (
			mu    sync.Mutex
			codes = map[int]int{}
			wg    sync.WaitGroup
		)
		for range 24 {
			wg.Go(func() {
				c, _ := p.call("POST", path, nil, body)
				mu.Lock()
				codes[c]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return codes
	}
	if got := burst("/v1/auth/login", map[string]string{"username": "acme-member", "password": "wrong-password-x"}); got[401] != 3 || got[429] != 21 {
		t.Errorf("24 wrong passwords at once: answers %v, want exactly 3 checked (401) and 21 refused (429)", got)
	}

	// The same for TOTP codes, on the MFA step of a right password.
	enrol := p.must(200, "POST", "/v1/auth/totp/enroll", f.admin, map[string]string{"password": "password-of-admin"})
	code, err := totp.GenerateCode(enrol["secret"].(string), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.must(200, "POST", "/v1/auth/totp/confirm", f.admin, map[string]string{"code": code})
	mfa := p.must(200, "POST", "/v1/auth/login", nil, map[string]string{"username": "acme-admin", "password": "password-of-admin"})["mfaToken"].(string)
	if got := burst("/v1/auth/mfa/verify", map[string]string{"mfaToken": mfa, "code": "000000"}); got[401] != 3 || got[429] != 21 {
		t.Errorf("24 wrong TOTP codes at once: answers %v, want exactly 3 checked (401) and 21 refused (429)", got)
	}
}

// TestLogoutEverywhere: the refresh token alone ends every session of its user — the SDK and CLI
// log out without an access token — and a token core does not know is refused rather than
// answered as if everything had ended.
func TestLogoutEverywhere(t *testing.T) {
	p := startPlatform(t, nil)
	p.newTenant("acme", "PLATFORM")
	a1, r1 := p.login("acme-member", "password-of-member")
	a2, r2 := p.login("acme-member", "password-of-member")
	a3, _ := p.login("acme-owner", "password-of-owner")

	p.must(200, "POST", "/v1/auth/logout", nil, map[string]any{"refreshToken": r1, "allSessions": true})
	for name, c := range map[string]cred{"the logging-out session": bearer(a1), "another session": bearer(a2)} {
		if code, _ := p.call("GET", "/v1/me", c, nil); code != 401 {
			t.Errorf("%s after logging out everywhere = %d, want 401", name, code)
		}
	}
	if code, _ := p.call("POST", "/v1/auth/refresh", nil, map[string]string{"refreshToken": r2}); code != 401 {
		t.Errorf("another session's refresh token after logging out everywhere = %d, want 401", code)
	}
	p.must(200, "GET", "/v1/me", bearer(a3), nil) // another user's session stays
	// A public call does not fail for a stale access token sent along with it.
	p.must(200, "POST", "/v1/auth/login", bearer(a1), map[string]string{"username": "acme-member", "password": "password-of-member"})

	unknown, _, err := token.NewRefreshToken(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if code, got := p.call("POST", "/v1/auth/logout", nil, map[string]any{"refreshToken": unknown, "allSessions": true}); code != 401 {
		t.Errorf("logging out everywhere with an unknown refresh token = %d %v, want 401", code, got)
	}
}

// TestLoginUpgradesPasswordHash: a hash stored under other parameters than the configured ones
// is replaced at the user's next right login — the same password, so no session ends — and a
// wrong password changes nothing.
func TestLoginUpgradesPasswordHash(t *testing.T) {
	p := startPlatform(t, nil) // 8 MiB, 1 pass
	p.newTenant("acme", "PLATFORM")
	db := p.core.env["CORE_DATABASE_URL"]
	before, _ := p.login("acme-member", "password-of-member")
	older, err := password.Hash("password-of-member", password.Params{MemoryKiB: 8 * 1024, Iterations: 2, Parallelism: 1, SaltLen: 16, KeyLen: 32}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	readString(t, db, "UPDATE core.users SET password_hash = $1 WHERE username = 'acme-member' RETURNING password_hash", older)
	stored := func() string {
		return readString(t, db, "SELECT password_hash FROM core.users WHERE username = 'acme-member'")
	}

	if c, _ := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "acme-member", "password": "wrong-password-x"}); c != 401 || stored() != older {
		t.Errorf("wrong password: %d, hash replaced: %v; want 401 and the hash kept", c, stored() != older)
	}
	p.login("acme-member", "password-of-member")
	now := stored()
	if now == older || !strings.Contains(now, "$m=8192,t=1,") {
		t.Errorf("hash after a right login = %q, want it replaced under the configured parameters (m=8192,t=1)", now)
	}
	p.login("acme-member", "password-of-member") // the new hash verifies
	p.must(200, "GET", "/v1/me", bearer(before), nil)
}

// TestSigningKeyRotationAcrossReplicas: after `core signing-key rotate`, a replica started later
// signs with the new key, and one that started before accepts those tokens at once (it reloads
// for a key it does not know) rather than at its next periodic reload; tokens of the old key keep
// working, also after a second rotation within their lifetime.
func TestSigningKeyRotationAcrossReplicas(t *testing.T) {
	p := startPlatform(t, nil)
	p.newTenant("acme", "PLATFORM")
	oldTok, _ := p.login("acme-member", "password-of-member")
	env := p.core.env
	rotate := func() {
		t.Helper()
		var out strings.Builder
		if err := Run(context.Background(), "test", []string{"signing-key", "rotate"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
			t.Fatalf("core signing-key rotate = %v", err)
		}
	}
	rotate()
	later := startWithEnv(t, env, p.core.certs)
	waitReady(t, later)
	second := &platform{tb: t, core: later, es: p.es, client: later.httpClient(p.core.certs.ClientConfigNoCert())}
	newTok, _ := second.login("acme-member", "password-of-member")
	if kid(t, newTok) == kid(t, oldTok) {
		t.Fatalf("the replica started after the rotation signs with the old key %s", kid(t, oldTok))
	}
	p.must(200, "GET", "/v1/me", bearer(newTok), nil)      // the earlier replica, at once
	second.must(200, "GET", "/v1/me", bearer(oldTok), nil) // the old key still verifies
	rotate()
	for name, pl := range map[string]*platform{"earlier replica": p, "later replica": second} {
		if code, _ := pl.call("GET", "/v1/me", bearer(oldTok), nil); code != 200 {
			t.Errorf("%s: a token of the key before last after a second rotation = %d, want 200 until it expires", name, code)
		}
	}
}

// kid returns the key id in a JWT's header.
func kid(tb testing.TB, jwt string) string {
	tb.Helper()
	h, _, _ := strings.Cut(jwt, ".")
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		tb.Fatal(err)
	}
	var header struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &header); err != nil {
		tb.Fatal(err)
	}
	return header.Kid
}

func TestUnknownUsersAreIndistinguishable(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")

	// A client can derive a new user's password before creating them: prelogin answers the same
	// parameters before and after.
	before := p.must(200, "POST", "/v1/auth/prelogin", nil, map[string]string{"username": "Future-User"})
	p.must(200, "POST", "/v1/tenants/"+f.id+"/users", f.owner, map[string]any{"username": "future-user", "password": "future-password-1"})
	after := p.must(200, "POST", "/v1/auth/prelogin", nil, map[string]string{"username": "future-user"})
	if before["salt"] != after["salt"] || before["memoryKiB"] != after["memoryKiB"] {
		t.Errorf("prelogin before creation %v, after %v: want the same parameters", before, after)
	}

	known := p.must(200, "POST", "/v1/auth/prelogin", nil, map[string]string{"username": "acme-member"})
	unknown := p.must(200, "POST", "/v1/auth/prelogin", nil, map[string]string{"username": "no-such-user"})
	again := p.must(200, "POST", "/v1/auth/prelogin", nil, map[string]string{"username": "no-such-user"})
	if keysOf(known) != keysOf(unknown) || known["kdf"] != unknown["kdf"] || known["memoryKiB"] != unknown["memoryKiB"] ||
		known["iterations"] != unknown["iterations"] || len(known["salt"].(string)) != len(unknown["salt"].(string)) {
		t.Errorf("prelogin known = %v, unknown = %v: want the same shape and parameters", known, unknown)
	}
	if known["salt"] == unknown["salt"] {
		t.Errorf("prelogin gave two users the same salt")
	}
	if unknown["salt"] != again["salt"] {
		t.Errorf("prelogin of an unknown user is not stable: %v then %v", unknown["salt"], again["salt"])
	}

	c1, wrongPassword := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "acme-member", "password": "wrong-password-x"})
	c2, noUser := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "no-such-user", "password": "wrong-password-x"})
	if c1 != c2 || wrongPassword["message"] != noUser["message"] {
		t.Errorf("login failure: known user %d %v, unknown %d %v; want identical answers", c1, wrongPassword, c2, noUser)
	}
	h1 := p.must(200, "POST", "/v1/auth/hint", nil, map[string]string{"username": "acme-member"})
	h2 := p.must(200, "POST", "/v1/auth/hint", nil, map[string]string{"username": "no-such-user"})
	if keysOf(h1) != keysOf(h2) || h1["hint"] != "" || h2["hint"] != "" {
		t.Errorf("hint known-without-hint = %v, unknown = %v; want the same empty answer", h1, h2)
	}
}

func keysOf(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return strings.Join(ks, ",")
}

func TestPasswordHints(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	root, _ := p.login(rootName, rootPass)
	p.must(200, "POST", "/v1/tenants/"+f.id+"/users", f.owner, map[string]any{
		"username": "hinted", "password": "hinted-password-1", "role": "member", "passwordHint": "the usual one",
	})
	if got := p.must(200, "POST", "/v1/auth/hint", nil, map[string]string{"username": "hinted"}); got["hint"] != "the usual one" {
		t.Errorf("hint = %v, want the user's hint", got)
	}
	p.must(200, "PATCH", "/v1/tenants/"+f.id, bearer(root), map[string]any{"passwordHintsEnabled": false})
	if got := p.must(200, "POST", "/v1/auth/hint", nil, map[string]string{"username": "hinted"}); got["hint"] != "" {
		t.Errorf("hint with hints switched off = %v, want empty", got)
	}
	if code, _ := p.call("POST", "/v1/tenants/"+f.id+"/users", f.owner, map[string]any{
		"username": "hinted2", "password": "hinted-password-2", "passwordHint": "x",
	}); code != 400 {
		t.Errorf("creating a user with a hint while hints are off = %d, want 400", code)
	}
}

func TestDisabledUserLosesSessionsAtOnce(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	p.must(200, "POST", "/v1/users/"+f.memberID+":disable", f.admin, map[string]string{})
	if code, _ := p.call("GET", "/v1/me", f.member, nil); code != 401 {
		t.Errorf("disabled user's token = %d, want 401", code)
	}
	if code, _ := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "acme-member", "password": "password-of-member"}); code != 401 {
		t.Errorf("disabled user's login = %d, want 401", code)
	}
	p.must(200, "POST", "/v1/users/"+f.memberID+":enable", f.manage, map[string]string{})
	p.login("acme-member", "password-of-member")
}

func TestAPIKeys(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	k := p.must(200, "POST", "/v1/apikeys", f.admin, map[string]any{"name": "backup", "scopes": []string{"export"}})
	if !strings.HasPrefix(k["apiSecret"].(string), "cas_") {
		t.Errorf("apiSecret %q lacks its recognisable prefix", k["apiSecret"])
	}
	old := cred{"X-Api-Key": k["apiKey"].(string), "X-Api-Secret": k["apiSecret"].(string)}
	me := p.must(200, "GET", "/v1/me", old, nil)
	if me["principalType"] != "apikey" || me["tenantId"] != f.id {
		t.Errorf("GET /v1/me as the key = %v", me)
	}
	id := k["key"].(map[string]any)["apiKeyId"].(string)
	rotated := p.must(200, "POST", "/v1/apikeys/"+id+":rotate", f.admin, map[string]any{"overlap": "3600s"})
	newCred := cred{"X-Api-Key": rotated["apiKey"].(string), "X-Api-Secret": rotated["apiSecret"].(string)}
	p.must(200, "GET", "/v1/me", old, nil) // within the overlap
	p.must(200, "GET", "/v1/me", newCred, nil)
	list := p.must(200, "GET", "/v1/apikeys", f.admin, nil)
	if raw, _ := json.Marshal(list); strings.Contains(string(raw), k["apiSecret"].(string)) || strings.Contains(string(raw), rotated["apiSecret"].(string)) {
		t.Errorf("GET /v1/apikeys shows a secret")
	}
	p.must(200, "DELETE", "/v1/apikeys/"+id, f.admin, nil)
	for name, c := range map[string]cred{"old secret": old, "new secret": newCred} {
		if code, _ := p.call("GET", "/v1/me", c, nil); code != 401 {
			t.Errorf("revoked key, %s = %d, want 401", name, code)
		}
	}
	// A typo in the secret is caught by its checksum.
	bad := cred{"X-Api-Key": newCred["X-Api-Key"], "X-Api-Secret": newCred["X-Api-Secret"][:len(newCred["X-Api-Secret"])-1] + "x"}
	if code, _ := p.call("GET", "/v1/me", bad, nil); code != 401 {
		t.Errorf("mistyped secret = %d, want 401", code)
	}
}

// TestOwnersSwitchHintsButDoNotRename: tenant names are unique across the platform, so an owner
// allowed to rename could try names and learn which other tenants exist; owners switch their
// tenant's password hints, and only the platform admin renames.
func TestOwnersSwitchHintsButDoNotRename(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	p.newTenant("globex", "PLATFORM")
	for _, name := range []string{"GLOBEX", "initech"} {
		code, got := p.call("PATCH", "/v1/tenants/"+f.id, f.owner, map[string]any{"name": name, "passwordHintsEnabled": false})
		if code != 403 || !strings.Contains(fmt.Sprint(got["message"]), "only the platform admin renames") {
			t.Errorf("acme's owner renaming to %s = %d %v, want 403 whether or not the name is taken", name, code, got)
		}
	}
	if got := p.must(200, "GET", "/v1/tenants/"+f.id, f.owner, nil); got["name"] != "acme" || got["passwordHintsEnabled"] != true {
		t.Errorf("acme after refused renames = %v, want unchanged (hints too)", got)
	}
	if got := p.must(200, "PATCH", "/v1/tenants/"+f.id, f.owner, map[string]any{"passwordHintsEnabled": false}); got["passwordHintsEnabled"] != false {
		t.Errorf("owner switching hints off = %v", got)
	}
	root, _ := p.login(rootName, rootPass)
	if got := p.must(200, "PATCH", "/v1/tenants/"+f.id, bearer(root), map[string]any{"name": "initech"}); got["name"] != "initech" {
		t.Errorf("platform admin renaming = %v", got)
	}
	if code, _ := p.call("PATCH", "/v1/tenants/"+f.id, f.admin, map[string]any{"passwordHintsEnabled": true}); code != 403 {
		t.Errorf("a tenant admin switching hints = %d, want 403 (owners only)", code)
	}
}

// TestAPIKeysNameTheirCreator: machine keys belong to the tenant and keep working after the person
// who created them leaves, so the list names who created each key — an owner offboarding someone
// finds the keys to revoke — and keeps the creator's id once they are deleted.
func TestAPIKeysNameTheirCreator(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	adminID := p.must(200, "POST", "/v1/tenants/"+f.id+"/users", f.owner, map[string]any{
		"username": "acme-admin-2", "password": "admin-2-password", "role": "admin"})["userId"].(string)
	tok, _ := p.login("acme-admin-2", "admin-2-password")
	k := p.must(200, "POST", "/v1/apikeys", bearer(tok), map[string]any{"name": "nightly", "scopes": []string{"export"}})
	key := cred{"X-Api-Key": k["apiKey"].(string), "X-Api-Secret": k["apiSecret"].(string)}
	keyID := k["key"].(map[string]any)["apiKeyId"].(string)
	creator := func() (id, name any) {
		t.Helper()
		for _, x := range p.must(200, "GET", "/v1/apikeys", f.owner, nil)["keys"].([]any) {
			if m := x.(map[string]any); m["apiKeyId"] == keyID {
				return m["createdBy"], m["createdByUsername"]
			}
		}
		t.Fatalf("key %s not listed", keyID)
		return nil, nil
	}
	if id, name := creator(); id != adminID || name != "acme-admin-2" {
		t.Errorf("listed creator = %v %v, want %s acme-admin-2", id, name, adminID)
	}
	p.must(200, "DELETE", "/v1/users/"+adminID, f.owner, nil)
	p.must(200, "GET", "/v1/me", key, nil) // the tenant's key outlives its creator
	if id, name := creator(); id != adminID || (name != nil && name != "") {
		t.Errorf("listed creator after their deletion = %v %v, want the id %s and no name", id, name, adminID)
	}
}
