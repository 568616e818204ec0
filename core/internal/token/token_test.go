package token_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/custos-platform/custos/core/internal/token"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	iss = "https://custos.example"
	aud = "custos-api"
)

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.set(t); return c }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

// mustKey returns a deterministic signing key from a one-byte seed pattern.
func mustKey(tb testing.TB, fill byte, now time.Time) token.SigningKey {
	tb.Helper()
	k, err := token.GenerateSigningKey(bytes.NewReader(bytes.Repeat([]byte{fill}, 32)), now)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func mustKeys(tb testing.TB, current token.SigningKey, previous ...token.SigningKey) *token.Keys {
	tb.Helper()
	ks, err := token.NewKeys(current, previous...)
	if err != nil {
		tb.Fatal(err)
	}
	return ks
}

func mustIssuer(tb testing.TB, ks *token.Keys, c *clock) *token.Issuer {
	tb.Helper()
	i, err := token.NewIssuer(ks, iss, aud, 15*time.Minute, 5*time.Minute, c.now)
	if err != nil {
		tb.Fatal(err)
	}
	return i
}

func memberClaims() token.Claims {
	return token.Claims{
		Subject: "6f1c2b8e-0000-4000-8000-000000000001", TenantID: "6f1c2b8e-0000-4000-8000-0000000000aa",
		Role: token.RoleMember, SecurityStamp: "stamp-1", SessionID: "6f1c2b8e-0000-4000-8000-0000000000ff",
	}
}

func mustIssue(tb testing.TB, i *token.Issuer, c token.Claims) string {
	tb.Helper()
	s, _, err := i.Issue(c)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

type fixture struct {
	key    token.SigningKey
	keys   *token.Keys
	clock  *clock
	issuer *token.Issuer
}

func newFixture(tb testing.TB) fixture {
	c := newClock(t0)
	k := mustKey(tb, 1, t0)
	ks := mustKeys(tb, k)
	return fixture{key: k, keys: ks, clock: c, issuer: mustIssuer(tb, ks, c)}
}

// --- hand-made tokens, for attacks ---

var seg = base64.RawURLEncoding

func encodeJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return seg.EncodeToString(b)
}

// craft builds header.payload.signature, the signature computed by sign
// over the signing input.
func craft(tb testing.TB, header, payload map[string]any, sign func(input string) []byte) string {
	tb.Helper()
	input := encodeJSON(tb, header) + "." + encodeJSON(tb, payload)
	return input + "." + seg.EncodeToString(sign(input))
}

func edSigner(priv ed25519.PrivateKey) func(string) []byte {
	return func(in string) []byte { return ed25519.Sign(priv, []byte(in)) }
}

// goodPayload is what Issue would sign at t0.
func goodPayload() map[string]any {
	return map[string]any{
		"iss": iss, "aud": []string{aud}, "sub": "user-1", "sst": "stamp-1", "sid": "session-1",
		"pur": "access", "jti": "id-1", "tid": "tenant-1", "role": "member",
		"iat": t0.Unix(), "nbf": t0.Unix(), "exp": t0.Add(15 * time.Minute).Unix(),
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func edHeader(kid string) map[string]any {
	return map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": kid}
}

// --- tests ---

func TestIssueVerifyRoundTrip(t *testing.T) {
	f := newFixture(t)
	c := memberClaims()
	c.PlatformAdmin = true
	s, ttl, err := f.issuer.Issue(c)
	if err != nil || ttl != 15*time.Minute {
		t.Fatalf("Issue = _, %v, %v, want 15m, nil", ttl, err)
	}
	got, err := f.issuer.Verify(s, token.PurposeAccess)
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if !got.IssuedAt.Equal(t0) || !got.NotBefore.Equal(t0) || !got.ExpiresAt.Equal(t0.Add(15*time.Minute)) {
		t.Errorf("Verify times = iat %v, nbf %v, exp %v; want %v, %v, +15m", got.IssuedAt, got.NotBefore, got.ExpiresAt, t0, t0)
	}
	if len(got.ID) < 16 {
		t.Errorf("jti = %q, want at least 16 characters", got.ID)
	}
	want := c
	want.Issuer, want.Audience, want.Purpose, want.ID = iss, aud, token.PurposeAccess, got.ID
	got.IssuedAt, got.NotBefore, got.ExpiresAt = time.Time{}, time.Time{}, time.Time{}
	if got != want {
		t.Fatalf("Verify = %+v, want %+v", got, want)
	}
	// The header carries the kid of the current key and alg EdDSA.
	hdr, _ := seg.DecodeString(strings.Split(s, ".")[0])
	var h map[string]any
	_ = json.Unmarshal(hdr, &h)
	if h["alg"] != "EdDSA" || h["kid"] != f.key.ID {
		t.Errorf("header = %v, want alg EdDSA, kid %s", h, f.key.ID)
	}
	// Two tokens for the same claims differ (jti).
	if s2 := mustIssue(t, f.issuer, c); s2 == s {
		t.Error("two tokens are identical: jti not random")
	}
}

func TestPurpose(t *testing.T) {
	f := newFixture(t)
	mfa, ttl, err := f.issuer.IssueMFA("user-1", "stamp-1")
	if err != nil || ttl != 5*time.Minute {
		t.Fatalf("IssueMFA = _, %v, %v", ttl, err)
	}
	if c, err := f.issuer.Verify(mfa, token.PurposeMFA); err != nil || c.Subject != "user-1" || c.Purpose != token.PurposeMFA {
		t.Fatalf("Verify(mfa, mfa) = %+v, %v", c, err)
	}
	if _, err := f.issuer.Verify(mfa, token.PurposeAccess); !errors.Is(err, token.ErrWrongPurpose) || !errors.Is(err, token.ErrInvalidToken) {
		t.Errorf("Verify(mfa token as access) = %v, want ErrWrongPurpose", err)
	}
	access := mustIssue(t, f.issuer, memberClaims())
	if _, err := f.issuer.Verify(access, token.PurposeMFA); !errors.Is(err, token.ErrWrongPurpose) {
		t.Errorf("Verify(access token as mfa) = %v, want ErrWrongPurpose", err)
	}
	if _, err := f.issuer.Verify(access, "refresh"); !errors.Is(err, token.ErrInvalidToken) {
		t.Errorf("Verify(purpose refresh) = %v, want ErrInvalidToken", err)
	}
	// MFA tokens expire sooner.
	f.clock.add(5*time.Minute + token.Leeway + time.Second)
	if _, err := f.issuer.Verify(mfa, token.PurposeMFA); !errors.Is(err, token.ErrExpired) {
		t.Errorf("Verify(mfa after 5m30s) = %v, want ErrExpired", err)
	}
	if _, err := f.issuer.Verify(access, token.PurposeAccess); err != nil {
		t.Errorf("Verify(access after 5m30s) = %v, want nil", err)
	}
}

func TestValidityWindow(t *testing.T) {
	f := newFixture(t)
	s := mustIssue(t, f.issuer, memberClaims())
	tests := []struct {
		name string
		at   time.Time
		want error
	}{
		{"at issue", t0, nil},
		{"just before expiry", t0.Add(15*time.Minute - time.Second), nil},
		{"expired within leeway", t0.Add(15*time.Minute + token.Leeway - time.Second), nil},
		{"expired beyond leeway", t0.Add(15*time.Minute + token.Leeway + time.Second), token.ErrExpired},
		{"long expired", t0.Add(24 * time.Hour), token.ErrExpired},
		{"clock behind within leeway", t0.Add(-token.Leeway + time.Second), nil},
		{"not yet valid", t0.Add(-token.Leeway - time.Second), token.ErrNotYetValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.clock.set(tc.at)
			_, err := f.issuer.Verify(s, token.PurposeAccess)
			if !errors.Is(err, tc.want) || (tc.want != nil && !errors.Is(err, token.ErrInvalidToken)) {
				t.Fatalf("Verify at %v = %v, want %v", tc.at.Sub(t0), err, tc.want)
			}
		})
	}
}

func TestIssuerAndAudience(t *testing.T) {
	f := newFixture(t)
	s := mustIssue(t, f.issuer, memberClaims())
	for _, tc := range []struct{ name, iss, aud string }{
		{"wrong audience", iss, "other-api"},
		{"wrong issuer", "https://evil.example", aud},
		{"issuer case", strings.ToUpper(iss), aud},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other, err := token.NewIssuer(f.keys, tc.iss, tc.aud, time.Minute, time.Minute, f.clock.now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Verify(s, token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
				t.Fatalf("Verify by %s = %v, want ErrInvalidToken", tc.name, err)
			}
		})
	}
}

func TestTamperedTokens(t *testing.T) {
	f := newFixture(t)
	s := mustIssue(t, f.issuer, memberClaims())
	parts := strings.Split(s, ".")

	t.Run("payload role raised", func(t *testing.T) {
		raw, _ := seg.DecodeString(parts[1])
		raised := bytes.Replace(raw, []byte(`"role":"member"`), []byte(`"role":"owner"`), 1)
		if bytes.Equal(raw, raised) {
			t.Fatal("test setup: role not found")
		}
		forged := parts[0] + "." + seg.EncodeToString(raised) + "." + parts[2]
		if _, err := f.issuer.Verify(forged, token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("Verify(raised role) = %v", err)
		}
	})
	t.Run("payload made platform admin", func(t *testing.T) {
		raw, _ := seg.DecodeString(parts[1])
		raised := bytes.Replace(raw, []byte(`{`), []byte(`{"padm":true,`), 1)
		forged := parts[0] + "." + seg.EncodeToString(raised) + "." + parts[2]
		if _, err := f.issuer.Verify(forged, token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("Verify(padm added) = %v", err)
		}
	})
	t.Run("every bit of the signature", func(t *testing.T) {
		sig, _ := seg.DecodeString(parts[2])
		for i := range len(sig) * 8 {
			bad := bytes.Clone(sig)
			bad[i/8] ^= 1 << (i % 8)
			forged := parts[0] + "." + parts[1] + "." + seg.EncodeToString(bad)
			if _, err := f.issuer.Verify(forged, token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
				t.Fatalf("Verify(signature bit %d flipped) = %v", i, err)
			}
		}
	})
	t.Run("every character", func(t *testing.T) {
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		for i := range len(s) {
			if s[i] == '.' {
				continue
			}
			j := strings.IndexByte(alphabet, s[i])
			b := []byte(s)
			b[i] = alphabet[(j+1)%len(alphabet)]
			if _, err := f.issuer.Verify(string(b), token.PurposeAccess); err == nil {
				t.Fatalf("Verify accepted the token with character %d changed", i)
			}
		}
	})
	t.Run("signature removed", func(t *testing.T) {
		if _, err := f.issuer.Verify(parts[0]+"."+parts[1]+".", token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("Verify(no signature) = %v", err)
		}
	})
	t.Run("signature of another token", func(t *testing.T) {
		other := strings.Split(mustIssue(t, f.issuer, memberClaims()), ".")
		if _, err := f.issuer.Verify(parts[0]+"."+parts[1]+"."+other[2], token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("Verify(spliced signature) = %v", err)
		}
	})
}

func TestAlgorithmAttacks(t *testing.T) {
	f := newFixture(t)
	pub := f.key.Public()
	kid := f.key.ID
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	evilPub := evil.Public().(ed25519.PublicKey)
	hmacWith := func(secret []byte) func(string) []byte {
		return func(in string) []byte { m := hmac.New(sha256.New, secret); m.Write([]byte(in)); return m.Sum(nil) }
	}
	jwkX := seg.EncodeToString(pub)
	librarySigned := func(m jwt.SigningMethod, key any) string {
		tk := jwt.NewWithClaims(m, jwt.MapClaims(goodPayload()))
		tk.Header["kid"] = kid
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name  string
		token string
	}{
		{"alg none, no signature", craft(t, map[string]any{"alg": "none", "typ": "JWT", "kid": kid}, goodPayload(), func(string) []byte { return nil })},
		{"alg None", craft(t, map[string]any{"alg": "None", "kid": kid}, goodPayload(), func(string) []byte { return nil })},
		{"alg none via library", librarySigned(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType)},
		{"no alg", craft(t, map[string]any{"kid": kid}, goodPayload(), edSigner(f.key.Private))},
		{"alg empty", craft(t, map[string]any{"alg": "", "kid": kid}, goodPayload(), edSigner(f.key.Private))},
		{"alg Ed25519 (not the JWS name)", craft(t, map[string]any{"alg": "Ed25519", "kid": kid}, goodPayload(), edSigner(f.key.Private))},
		{"alg eddsa lowercase", craft(t, map[string]any{"alg": "eddsa", "kid": kid}, goodPayload(), edSigner(f.key.Private))},
		{"HS256 keyed with the public key bytes", craft(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, goodPayload(), hmacWith(pub))},
		{"HS256 keyed with the JWK x", craft(t, map[string]any{"alg": "HS256", "kid": kid}, goodPayload(), hmacWith([]byte(jwkX)))},
		{"HS256 via library with public key", librarySigned(jwt.SigningMethodHS256, []byte(pub))},
		{"HS512 keyed with the public key bytes", librarySigned(jwt.SigningMethodHS512, []byte(pub))},
		{"RS256", librarySigned(jwt.SigningMethodRS256, rsaKey)},
		{"PS256", librarySigned(jwt.SigningMethodPS256, rsaKey)},
		{"ES256", librarySigned(jwt.SigningMethodES256, ecKey)},
		{"EdDSA by another key under our kid", craft(t, edHeader(kid), goodPayload(), edSigner(evil))},
		{"EdDSA by another key, its own jwk embedded", craft(t, map[string]any{
			"alg": "EdDSA", "kid": token.KeyID(evilPub),
			"jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": seg.EncodeToString(evilPub), "kid": token.KeyID(evilPub)},
		}, goodPayload(), edSigner(evil))},
		{"EdDSA by another key, its jwk embedded under our kid", craft(t, map[string]any{
			"alg": "EdDSA", "kid": kid,
			"jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": seg.EncodeToString(evilPub), "kid": kid},
		}, goodPayload(), edSigner(evil))},
		{"unknown kid", craft(t, edHeader("no-such-key"), goodPayload(), edSigner(f.key.Private))},
		{"missing kid", craft(t, map[string]any{"alg": "EdDSA"}, goodPayload(), edSigner(f.key.Private))},
		{"empty kid", craft(t, edHeader(""), goodPayload(), edSigner(f.key.Private))},
		{"numeric kid", craft(t, map[string]any{"alg": "EdDSA", "kid": 1}, goodPayload(), edSigner(f.key.Private))},
		{"crit header", craft(t, map[string]any{"alg": "EdDSA", "kid": kid, "crit": []string{"exp"}}, goodPayload(), edSigner(f.key.Private))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.issuer.Verify(tc.token, token.PurposeAccess)
			if !errors.Is(err, token.ErrInvalidToken) {
				t.Fatalf("Verify(%s) = %v, want ErrInvalidToken", tc.name, err)
			}
			if strings.Contains(err.Error(), kid) || strings.Contains(err.Error(), "user-1") {
				t.Errorf("error %q quotes the token", err)
			}
		})
	}
	// The control: the same payload, correctly signed, verifies; so each
	// refusal above is due to what the case changed.
	good := craft(t, edHeader(kid), goodPayload(), edSigner(f.key.Private))
	if _, err := f.issuer.Verify(good, token.PurposeAccess); err != nil {
		t.Fatalf("Verify(control) = %v", err)
	}
}

// Header parameters that point at keys elsewhere are ignored, never fetched:
// a token correctly signed by our key still verifies with them, and one
// signed by the key they point to does not, with no request made.
func TestRemoteKeyHeadersIgnored(t *testing.T) {
	f := newFixture(t)
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	evilPub := evil.Public().(ed25519.PublicKey)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_ = json.NewEncoder(w).Encode(token.JWKS{Keys: []token.JWK{{Kty: "OKP", Crv: "Ed25519", X: seg.EncodeToString(evilPub), Kid: token.KeyID(evilPub), Use: "sig", Alg: "EdDSA"}}})
	}))
	defer srv.Close()
	remote := map[string]any{"alg": "EdDSA", "jku": srv.URL, "x5u": srv.URL + "/cert.pem", "x5c": []string{"MIIB"}}

	attacker := with(remote, "kid", token.KeyID(evilPub))
	if _, err := f.issuer.Verify(craft(t, attacker, goodPayload(), edSigner(evil)), token.PurposeAccess); !errors.Is(err, token.ErrUnknownKey) {
		t.Errorf("Verify(signed by the jku key) = %v, want ErrUnknownKey", err)
	}
	ours := with(remote, "kid", f.key.ID)
	if _, err := f.issuer.Verify(craft(t, ours, goodPayload(), edSigner(f.key.Private)), token.PurposeAccess); err != nil {
		t.Errorf("Verify(our signature, with jku/x5u/x5c) = %v, want nil: the headers are ignored", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the jku/x5u server got %d requests, want 0", n)
	}
}

func TestRequiredClaims(t *testing.T) {
	f := newFixture(t)
	sign := func(p map[string]any) string { return craft(t, edHeader(f.key.ID), p, edSigner(f.key.Private)) }
	tests := []struct {
		name    string
		payload map[string]any
	}{
		{"no exp", with(goodPayload(), "exp", nil)},
		{"no nbf", with(goodPayload(), "nbf", nil)},
		{"no iat", with(goodPayload(), "iat", nil)},
		{"iat in the future", with(goodPayload(), "iat", t0.Add(time.Hour).Unix())},
		{"no iss", with(goodPayload(), "iss", nil)},
		{"no aud", with(goodPayload(), "aud", nil)},
		{"aud as a string of another", with(goodPayload(), "aud", "other")},
		{"two audiences", with(goodPayload(), "aud", []string{aud, "other"})},
		{"no sub", with(goodPayload(), "sub", nil)},
		{"no stamp", with(goodPayload(), "sst", nil)},
		{"empty stamp", with(goodPayload(), "sst", "")},
		{"no jti", with(goodPayload(), "jti", nil)},
		{"no purpose", with(goodPayload(), "pur", nil)},
		{"purpose refresh", with(goodPayload(), "pur", "refresh")},
		{"exp as string", with(goodPayload(), "exp", "tomorrow")},
		{"exp huge", with(goodPayload(), "exp", 1e300)},
		{"padm as string", with(goodPayload(), "padm", "true")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.issuer.Verify(sign(tc.payload), token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
				t.Fatalf("Verify(%s) = %v, want ErrInvalidToken", tc.name, err)
			}
		})
	}
	// The aud claim as a single string naming us is valid JWT and accepted.
	if _, err := f.issuer.Verify(sign(with(goodPayload(), "aud", aud)), token.PurposeAccess); err != nil {
		t.Errorf("Verify(aud as one string) = %v, want nil", err)
	}
}

func TestMalformed(t *testing.T) {
	f := newFixture(t)
	good := mustIssue(t, f.issuer, memberClaims())
	parts := strings.Split(good, ".")
	for _, s := range []string{
		"", ".", "..", "...", "a.b.c", "a.b", good + ".", good + ".x", "." + good,
		" " + good, good + " ", good + "\n", good + "\r\n", parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:],
		strings.ToUpper(good),
		parts[0] + "=." + parts[1] + "." + parts[2], // padding
		"Bearer " + good,
		strings.Repeat("a", token.MaxTokenLen+1),
		good + strings.Repeat("A", token.MaxTokenLen),
		strings.ReplaceAll(good, "-", "+"),
	} {
		if s == good {
			continue
		}
		if _, err := f.issuer.Verify(s, token.PurposeAccess); !errors.Is(err, token.ErrInvalidToken) {
			t.Errorf("Verify(…%q) = %v, want ErrInvalidToken", s[max(0, len(s)-30):], err)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	c := newClock(t0)
	k1 := mustKey(t, 1, t0)
	i := mustIssuer(t, mustKeys(t, k1), c)
	old := mustIssue(t, i, memberClaims())

	// Rotate: k2 signs, k1 still verifies.
	k2 := mustKey(t, 2, t0)
	i.SetKeys(mustKeys(t, k2, k1))
	if _, err := i.Verify(old, token.PurposeAccess); err != nil {
		t.Fatalf("Verify(token of the previous key) = %v, want nil", err)
	}
	fresh := mustIssue(t, i, memberClaims())
	if claimsKid(t, fresh) != k2.ID {
		t.Fatalf("new token kid = %s, want %s", claimsKid(t, fresh), k2.ID)
	}
	if got := i.JWKS(); len(got.Keys) != 2 || got.Keys[0].Kid != k2.ID || got.Keys[1].Kid != k1.ID {
		t.Fatalf("JWKS = %+v, want k2 then k1", got)
	}

	// Drop k1: its tokens stop verifying at once.
	i.SetKeys(mustKeys(t, k2))
	if _, err := i.Verify(old, token.PurposeAccess); !errors.Is(err, token.ErrUnknownKey) {
		t.Fatalf("Verify(token of a removed key) = %v, want ErrUnknownKey", err)
	}
	if _, err := i.Verify(fresh, token.PurposeAccess); err != nil {
		t.Fatalf("Verify(token of the current key) = %v", err)
	}
}

func TestKeyNotAfter(t *testing.T) {
	c := newClock(t0)
	k1 := mustKey(t, 1, t0)
	k1.NotAfter = t0.Add(10 * time.Minute)
	k2 := mustKey(t, 2, t0)
	i := mustIssuer(t, mustKeys(t, k1), c)
	old := mustIssue(t, i, memberClaims())
	i.SetKeys(mustKeys(t, k2, k1))

	c.set(t0.Add(10*time.Minute + time.Second)) // token still within exp, key retired
	if _, err := i.Verify(old, token.PurposeAccess); !errors.Is(err, token.ErrUnknownKey) {
		t.Fatalf("Verify(token of a key past NotAfter) = %v, want ErrUnknownKey", err)
	}
	if got := i.JWKS(); len(got.Keys) != 1 || got.Keys[0].Kid != k2.ID {
		t.Fatalf("JWKS after k1's NotAfter = %+v, want k2 only", got)
	}

	// A current key past NotAfter does not sign.
	i.SetKeys(mustKeys(t, k1))
	if _, _, err := i.Issue(memberClaims()); !errors.Is(err, token.ErrKeyExpired) {
		t.Fatalf("Issue with an expired current key = %v, want ErrKeyExpired", err)
	}
	if _, _, err := i.IssueMFA("u", "s"); !errors.Is(err, token.ErrKeyExpired) {
		t.Fatalf("IssueMFA with an expired current key = %v, want ErrKeyExpired", err)
	}
}

func claimsKid(tb testing.TB, s string) string {
	tb.Helper()
	hdr, err := seg.DecodeString(strings.Split(s, ".")[0])
	if err != nil {
		tb.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(hdr, &h); err != nil {
		tb.Fatal(err)
	}
	return h.Kid
}

func TestIssueValidation(t *testing.T) {
	f := newFixture(t)
	mod := func(fn func(*token.Claims)) token.Claims { c := memberClaims(); fn(&c); return c }
	tests := []struct {
		name string
		c    token.Claims
	}{
		{"no subject", mod(func(c *token.Claims) { c.Subject = "" })},
		{"no stamp", mod(func(c *token.Claims) { c.SecurityStamp = "" })},
		{"no session", mod(func(c *token.Claims) { c.SessionID = "" })},
		{"role without tenant", mod(func(c *token.Claims) { c.TenantID = "" })},
		{"tenant without role", mod(func(c *token.Claims) { c.Role = "" })},
		{"unknown role", mod(func(c *token.Claims) { c.Role = "superuser" })},
		{"role case", mod(func(c *token.Claims) { c.Role = "Admin" })},
		{"purpose mfa", mod(func(c *token.Claims) { c.Purpose = token.PurposeMFA })},
		{"huge subject", mod(func(c *token.Claims) { c.Subject = strings.Repeat("x", 257) })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := f.issuer.Issue(tc.c); !errors.Is(err, token.ErrInvalidClaims) {
				t.Fatalf("Issue(%s) = %v, want ErrInvalidClaims", tc.name, err)
			}
		})
	}
	// A platform admin outside any tenant is fine.
	admin := token.Claims{Subject: "u", SecurityStamp: "s", SessionID: "f", PlatformAdmin: true}
	if _, _, err := f.issuer.Issue(admin); err != nil {
		t.Errorf("Issue(platform admin, no tenant) = %v", err)
	}
	// Caller-supplied times and ids are overwritten.
	forged := mod(func(c *token.Claims) { c.ExpiresAt = t0.Add(100 * 365 * 24 * time.Hour); c.ID = "mine"; c.Issuer = "x" })
	got, err := f.issuer.Verify(mustIssue(t, f.issuer, forged), token.PurposeAccess)
	if err != nil || !got.ExpiresAt.Equal(t0.Add(15*time.Minute)) || got.ID == "mine" || got.Issuer != iss {
		t.Errorf("Issue kept caller-supplied exp/jti/iss: %+v, %v", got, err)
	}
	for _, bad := range [][2]string{{"", "s"}, {"u", ""}} {
		if _, _, err := f.issuer.IssueMFA(bad[0], bad[1]); !errors.Is(err, token.ErrInvalidClaims) {
			t.Errorf("IssueMFA(%q, %q) = %v, want ErrInvalidClaims", bad[0], bad[1], err)
		}
	}
}

func TestNewIssuerConfig(t *testing.T) {
	ks := mustKeys(t, mustKey(t, 1, t0))
	tests := []struct {
		name        string
		keys        *token.Keys
		iss, aud    string
		access, mfa time.Duration
	}{
		{"nil keys", nil, iss, aud, time.Minute, time.Minute},
		{"no issuer", ks, "", aud, time.Minute, time.Minute},
		{"no audience", ks, iss, "", time.Minute, time.Minute},
		{"zero access TTL", ks, iss, aud, 0, time.Minute},
		{"negative access TTL", ks, iss, aud, -time.Minute, time.Minute},
		{"long access TTL", ks, iss, aud, 2 * time.Hour, time.Minute},
		{"zero MFA TTL", ks, iss, aud, time.Minute, 0},
		{"long MFA TTL", ks, iss, aud, time.Minute, time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := token.NewIssuer(tc.keys, tc.iss, tc.aud, tc.access, tc.mfa, nil); !errors.Is(err, token.ErrInvalidConfig) {
				t.Fatalf("NewIssuer(%s) = %v, want ErrInvalidConfig", tc.name, err)
			}
		})
	}
}

func TestNewKeys(t *testing.T) {
	k1, k2 := mustKey(t, 1, t0), mustKey(t, 2, t0)
	corrupt := k2
	corrupt.Private = bytes.Clone(k2.Private)
	corrupt.Private[40] ^= 1 // public half
	mod := func(k token.SigningKey, fn func(*token.SigningKey)) token.SigningKey { fn(&k); return k }
	tests := []struct {
		name     string
		current  token.SigningKey
		previous []token.SigningKey
	}{
		{"empty id", mod(k1, func(k *token.SigningKey) { k.ID = "" }), nil},
		{"id with space", mod(k1, func(k *token.SigningKey) { k.ID = "a b" }), nil},
		{"id too long", mod(k1, func(k *token.SigningKey) { k.ID = strings.Repeat("a", 65) }), nil},
		{"no private key", mod(k1, func(k *token.SigningKey) { k.Private = nil }), nil},
		{"seed only", mod(k1, func(k *token.SigningKey) { k.Private = k1.Private[:32] }), nil},
		{"public half wrong", corrupt, nil},
		{"previous bad", k1, []token.SigningKey{corrupt}},
		{"duplicate id", k1, []token.SigningKey{mod(k2, func(k *token.SigningKey) { k.ID = k1.ID })}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := token.NewKeys(tc.current, tc.previous...)
			if !errors.Is(err, token.ErrInvalidKey) {
				t.Fatalf("NewKeys(%s) = %v, want ErrInvalidKey", tc.name, err)
			}
			for _, k := range []token.SigningKey{k1, k2} {
				if strings.Contains(err.Error(), hex.EncodeToString(k.Private[:8])) || strings.Contains(err.Error(), string(k.Private[:8])) {
					t.Errorf("error %q holds key bytes", err)
				}
			}
		})
	}
	// NewKeys copies: clearing the caller's slice changes nothing.
	k3 := mustKey(t, 3, t0)
	ks := mustKeys(t, k3)
	i := mustIssuer(t, ks, newClock(t0))
	clear(k3.Private)
	if _, err := i.Verify(mustIssue(t, i, memberClaims()), token.PurposeAccess); err != nil {
		t.Fatalf("after clearing the caller's key: %v", err)
	}
}

func TestGenerateSigningKey(t *testing.T) {
	k := mustKey(t, 7, t0)
	if len(k.ID) != 16 || k.ID != token.KeyID(k.Public()) {
		t.Errorf("ID = %q, want KeyID(public) of 16 characters", k.ID)
	}
	sum := sha256.Sum256(k.Public())
	if want := base64.RawURLEncoding.EncodeToString(sum[:12]); k.ID != want {
		t.Errorf("ID = %s, want %s", k.ID, want)
	}
	if !k.NotAfter.Equal(t0.Add(token.SigningKeyLifetime)) {
		t.Errorf("NotAfter = %v", k.NotAfter)
	}
	if again := mustKey(t, 7, t0); !bytes.Equal(again.Private, k.Private) {
		t.Error("same seed, different key")
	}
	if _, err := token.GenerateSigningKey(bytes.NewReader(make([]byte, 31)), t0); !errors.Is(err, token.ErrRandom) {
		t.Errorf("GenerateSigningKey(short rand) = %v, want ErrRandom", err)
	}
}

func TestJWKS(t *testing.T) {
	k1, k2 := mustKey(t, 1, t0), mustKey(t, 2, t0)
	ks := mustKeys(t, k2, k1)
	b, err := json.Marshal(ks.JWKS(t0))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 2 {
		t.Fatalf("JWKS = %s, want 2 keys", b)
	}
	for i, k := range []token.SigningKey{k2, k1} {
		got := doc.Keys[i]
		want := map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": k.ID, "use": "sig", "alg": "EdDSA", "x": seg.EncodeToString(k.Public())}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("JWKS key %d = %v, want %v", i, got, want)
		}
	}
	for _, k := range []token.SigningKey{k1, k2} {
		for _, leak := range []string{seg.EncodeToString(k.Private.Seed()), seg.EncodeToString(k.Private), `"d"`} {
			if bytes.Contains(b, []byte(leak)) {
				t.Fatalf("JWKS %s holds private material", b)
			}
		}
	}
	// A verifier using only the published JWKS accepts our tokens.
	i := mustIssuer(t, ks, newClock(t0))
	s := mustIssue(t, i, memberClaims())
	x, _ := seg.DecodeString(doc.Keys[0]["x"])
	if _, err := jwt.Parse(s, func(*jwt.Token) (any, error) { return ed25519.PublicKey(x), nil },
		jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithTimeFunc(func() time.Time { return t0 })); err != nil {
		t.Errorf("third-party verification with the JWKS key: %v", err)
	}
}

func TestNoKeyMaterialInFormatting(t *testing.T) {
	k := mustKey(t, 9, t0)
	ks := mustKeys(t, k)
	for _, v := range []any{k, &k, ks, *ks} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d"} {
			out := fmt.Sprintf(verb, v)
			for _, leak := range []string{hex.EncodeToString(k.Private[:6]), fmt.Sprint([]byte(k.Private[:6]))[1:12]} { //nolint:staticcheck // QF1010 would print the raw string; fmt's decimal byte list is the leak form checked here
				if strings.Contains(out, leak) {
					t.Errorf("Sprintf(%s, %T) = %q leaks the key", verb, v, out)
				}
			}
		}
	}
}

// RFC 8032 §7.1, TEST 1: proves the primitive the tokens rest on.
func TestRFC8032Vector1(t *testing.T) {
	seed, _ := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	wantPub := "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	wantSig := "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
	k, err := token.GenerateSigningKey(bytes.NewReader(seed), t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(k.Public()); got != wantPub {
		t.Fatalf("public key = %s, want %s", got, wantPub)
	}
	sig := ed25519.Sign(k.Private, nil)
	if got := hex.EncodeToString(sig); got != wantSig {
		t.Fatalf("signature = %s, want %s", got, wantSig)
	}
	if !ed25519.Verify(k.Public(), nil, sig) || ed25519.Verify(k.Public(), []byte{0}, sig) {
		t.Fatal("verification of the RFC 8032 vector")
	}
	// And through the JWS signing method the tokens use.
	if err := jwt.SigningMethodEdDSA.Verify("", sig, k.Public()); err != nil {
		t.Fatalf("SigningMethodEdDSA.Verify(RFC 8032 vector 1) = %v", err)
	}
}

func TestConcurrentRotation(t *testing.T) {
	c := newClock(t0)
	k1, k2 := mustKey(t, 1, t0), mustKey(t, 2, t0)
	i := mustIssuer(t, mustKeys(t, k1, k2), c)
	both := []*token.Keys{mustKeys(t, k1, k2), mustKeys(t, k2, k1)}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 200 {
				if g == 0 {
					i.SetKeys(both[n%2])
					continue
				}
				s := mustIssue(t, i, memberClaims())
				if _, err := i.Verify(s, token.PurposeAccess); err != nil {
					t.Errorf("Verify during rotation: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
