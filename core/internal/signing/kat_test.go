package signing

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/secretbox"
	"github.com/custos-platform/custos/core/internal/token"
)

// A stored signing key's private half is sealed with associated data "custos/core/signing-key/v1"
// NUL and the key id. Pinned: a change would leave every stored key unopenable at the next start.
func TestADKnownAnswer(t *testing.T) {
	const want = "637573746f732f636f72652f7369676e696e672d6b65792f763100" + // "custos/core/signing-key/v1\x00"
		"6b2d31" // "k-1"
	if got := hex.EncodeToString(ad("k-1")); got != want {
		t.Errorf("ad(%q) = %s, want %s", "k-1", got, want)
	}
}

// TestRowsOpenUnderPinnedAD checks the wiring: a row sealed under the literal associated data
// above loads, and one sealed for another key id does not.
func TestRowsOpenUnderPinnedAD(t *testing.T) {
	box, err := secretbox.NewBox([]secretbox.Key{{ID: "k1", Bytes: bytes.Repeat([]byte{9}, secretbox.KeySize)}}, "k1")
	if err != nil {
		t.Fatal(err)
	}
	k, err := token.GenerateSigningKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	seal := func(ad string) []byte {
		t.Helper()
		b, err := box.Seal(k.Private, []byte(ad))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	row := postgres.SigningKey{ID: k.ID, PrivateKeySealed: seal("custos/core/signing-key/v1\x00" + k.ID)}
	if _, err := fromRows([]postgres.SigningKey{row}, box); err != nil {
		t.Errorf("fromRows(sealed under the pinned AD) = %v", err)
	}
	row.PrivateKeySealed = seal("custos/core/signing-key/v1\x00" + k.ID + "x")
	if _, err := fromRows([]postgres.SigningKey{row}, box); err == nil {
		t.Error("fromRows(sealed for another key id) = nil error, want one")
	}
}
