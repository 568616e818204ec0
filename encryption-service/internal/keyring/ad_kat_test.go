package keyring

import (
	"encoding/hex"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// Known answers for the associated data of every stored key blob, computed independently with
// Python (bytes literals, hashlib.sha256, struct.pack(">H", …)). These bytes are what decides
// whether every key stored so far still opens: a change of label, separator, field order, hash or
// length prefix must fail here, and can only ship with a new label and a migration.
func TestStoredKeyADKnownAnswers(t *testing.T) {
	tenant := uuid.MustParse("00000000-0000-4000-8000-00000000000a")
	ctxID := uuid.MustParse("00000000-0000-4000-8000-00000000000b")
	version := uuid.MustParse("00000000-0000-4000-8000-00000000000c")
	rsaPub := []byte("-----BEGIN PUBLIC KEY-----\nexample\n-----END PUBLIC KEY-----\n")
	sealingPub := make([]byte, 32)
	for i := range sealingPub {
		sealingPub[i] = byte(i)
	}
	sym := postgres.Encryption{ID: ctxID, TenantID: tenant, Algorithm: aead.AES256GCM, SealingPublicKey: sealingPub}
	rsa := postgres.Encryption{ID: ctxID, TenantID: tenant, Algorithm: aead.RSAOAEP3072SHA256, SealingPublicKey: sealingPub}
	rsaVersion := postgres.KeyVersion{ID: version, PublicKey: rsaPub}

	const (
		label1  = "637573746f732f65732f76657273696f6e2d6b65792f763100" // "custos/es/version-key/v1\x00"
		label2  = "637573746f732f65732f76657273696f6e2d6b65792f763200" // "custos/es/version-key/v2\x00"
		sLabel1 = "637573746f732f65732f7365616c696e672d6b65792f763100" // "custos/es/sealing-key/v1\x00"
		sLabel2 = "637573746f732f65732f7365616c696e672d6b65792f763200" // "custos/es/sealing-key/v2\x00"
		tHex    = "30303030303030302d303030302d343030302d383030302d303030303030303030303061"
		eHex    = "30303030303030302d303030302d343030302d383030302d303030303030303030303062"
		vHex    = "30303030303030302d303030302d343030302d383030302d303030303030303030303063"
		symHex  = "4145532d3235362d47434d"                   // "AES-256-GCM"
		rsaHex  = "5253412d4f4145502d333037322d534841323536" // "RSA-OAEP-3072-SHA256"
	)
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"versionAD, symmetric", versionAD(sym, version), label1 + tHex + "00" + eHex + "00" + vHex + "00" + symHex},
		{"versionAD, RSA", versionAD(rsa, version), label1 + tHex + "00" + eHex + "00" + vHex + "00" + rsaHex},
		{"versionWrapAD, symmetric (= versionAD)", versionWrapAD(sym, rsaVersion), label1 + tHex + "00" + eHex + "00" + vHex + "00" + symHex},
		{"versionWrapAD, RSA", versionWrapAD(rsa, rsaVersion), label2 + tHex + "00" + eHex + "00" + vHex + "00" + rsaHex + "00" +
			"2d7c524b7668918d86082e6d57e7247ffc1347ed233112c3b5821362355b7691"}, // SHA-256 of the PEM
		{"sealingAD", sealingAD(sym), sLabel1 + tHex + "00" + eHex},
		{"sealingWrapAD", sealingWrapAD(sym), sLabel2 + tHex + "00" + eHex + "00" +
			"630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"}, // SHA-256 of 00..1f
		// Ciphertexts' associated data (aead.AssociatedData, with its own known answers there):
		// pinned here for the order in which the keyring passes the fields.
		{"associatedData", associatedData(sym, version), "637573746f732f65732f646174612f7631" +
			"0024" + tHex + "0024" + eHex + "0024" + vHex + "000b" + symHex},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hex.EncodeToString(tc.got); got != tc.want {
				t.Errorf("%s =\n%s\nwant\n%s", tc.name, got, tc.want)
			}
		})
	}

	// The bindings bind: another public key, tenant, context or version gives other bytes.
	other := rsaVersion
	other.PublicKey = append([]byte(nil), rsaPub...)
	other.PublicKey[0] ^= 1
	otherSealing := sym
	otherSealing.SealingPublicKey = append([]byte{}, sealingPub[1:]...)
	otherTenant := sym
	otherTenant.TenantID = ctxID
	distinct := map[string][2][]byte{
		"RSA public key":     {versionWrapAD(rsa, rsaVersion), versionWrapAD(rsa, other)},
		"sealing public key": {sealingWrapAD(sym), sealingWrapAD(otherSealing)},
		"tenant":             {sealingAD(sym), sealingAD(otherTenant)},
		"version":            {versionAD(sym, version), versionAD(sym, ctxID)},
		"v1 and v2":          {versionAD(rsa, version), versionWrapAD(rsa, rsaVersion)},
	}
	for name, p := range distinct {
		if hex.EncodeToString(p[0]) == hex.EncodeToString(p[1]) {
			t.Errorf("associated data does not change with the %s", name)
		}
	}
}
