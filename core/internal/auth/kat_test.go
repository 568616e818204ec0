package auth

import (
	"encoding/hex"
	"testing"

	"github.com/google/uuid"
)

// Known answers for what auth binds stored secrets to. The TOTP secret is sealed (secretbox) with
// associated data "custos/core/totp-secret/v1" NUL and the user id in canonical UUID form; a change
// of label, separator or id spelling would make every enrolled authenticator fail to open, so it
// must come with a migration, not by accident.
func TestTOTPADKnownAnswer(t *testing.T) {
	id := uuid.MustParse("00000000-0000-4000-8000-000000000001")
	const want = "637573746f732f636f72652f746f74702d7365637265742f763100" + // "custos/core/totp-secret/v1\x00"
		"30303030303030302d303030302d343030302d383030302d303030303030303030303031" // the id
	if got := hex.EncodeToString(totpAD(id)); got != want {
		t.Errorf("totpAD(%s) = %s, want %s", id, got, want)
	}
	if other := totpAD(uuid.MustParse("00000000-0000-4000-8000-000000000002")); hex.EncodeToString(other) == want {
		t.Error("totpAD gives two users the same associated data")
	}
}

// The prelogin seed is HKDF-SHA256(key, no salt, info "custos/core/prelogin/v1", 32 bytes),
// computed independently with Python's hmac/hashlib for key = 00 01 … 1f. Changing it changes every
// unknown username's fake prelogin parameters (and so tells an observer that something changed).
func TestPreloginSeedKnownAnswer(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	const want = "09c6768a83145c712a8f41b2767125ad3e9aa32d895fc89869caae349962f8d5"
	got, err := PreloginSeed(key)
	if err != nil {
		t.Fatalf("PreloginSeed() = %v", err)
	}
	if hex.EncodeToString(got) != want {
		t.Errorf("PreloginSeed(00..1f) = %x, want %s", got, want)
	}
}
