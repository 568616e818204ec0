package export

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"
)

// katRecord is a fixed record: the known answers below are its canonical encoding and tag under
// the integrity key of testSecret (00 01 … 1f).
func katRecord() Record {
	return Record{
		ID:           "00000000-0000-4000-8000-000000000001",
		OwnerID:      "00000000-0000-4000-8000-000000000002",
		Revision:     3,
		CipherText:   "AAECAwQFBgcICQ==",
		EncryptionID: "00000000-0000-4000-8000-000000000003",
		VersionID:    "00000000-0000-4000-8000-000000000004",
		Algorithm:    "AES-256-GCM",
		Metadata:     json.RawMessage(`{"formatVersion":1,"nonce":"bm9uY2U="}`),
		CreatedAt:    time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC),
		UpdatedAt:    time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC),
		Cursor:       "not covered",
	}
}

// Known answers of the export integrity encoding. canonical() is: the label
// "custos/core/export-record/v1", id, ownerId, revision, cipherText, encryptionId,
// encryptionVersionId, algorithm, metadata (canonical JSON), createdAt, updatedAt (Unix seconds
// "." nine-digit nanoseconds), each preceded by its length as a uvarint. The tag is "v1." and the
// unpadded base64url HMAC-SHA256 of it. Changing the label, the field order, the length prefixes
// or a field's spelling changes these and invalidates every export ever made: don't, without a v2.
const (
	katCanonicalHex = "1c" + "637573746f732f636f72652f6578706f72742d7265636f72642f7631" + // label
		"24" + "30303030303030302d303030302d343030302d383030302d303030303030303030303031" + // id
		"24" + "30303030303030302d303030302d343030302d383030302d303030303030303030303032" + // ownerId
		"01" + "33" + // revision "3"
		"10" + "41414543417751464267634943513d3d" + // cipherText
		"24" + "30303030303030302d303030302d343030302d383030302d303030303030303030303033" + // encryptionId
		"24" + "30303030303030302d303030302d343030302d383030302d303030303030303030303034" + // encryptionVersionId
		"0b" + "4145532d3235362d47434d" + // algorithm
		"26" + "7b22666f726d617456657273696f6e223a312c226e6f6e6365223a22626d39755932553d227d" + // metadata
		"14" + "313733353738373034352e313233343536303030" + // createdAt "1735787045.123456000"
		"14" + "313733383535353530362e303030303030303030" // updatedAt "1738555506.000000000"
	katTag = "v1.GtYi3MZELp4GgSIk5j22FoV83ImQg5_Q2vpw_KB3pqM" // also computed with Python hmac/hashlib
)

func TestCanonicalKnownAnswer(t *testing.T) {
	r := katRecord()
	meta, err := canonicalJSON(r.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	r.Metadata = meta
	if got := hex.EncodeToString(canonical(r)); got != katCanonicalHex {
		t.Errorf("canonical(katRecord) =\n%s\nwant\n%s", got, katCanonicalHex)
	}
}

func TestTagKnownAnswer(t *testing.T) {
	key := mustKey(t, testSecret())
	s := New(nil, key)
	r := katRecord()
	r.Metadata, _ = canonicalJSON(r.Metadata)
	got := s.tag(r)
	if got != katTag {
		t.Errorf("tag(katRecord) = %s, want %s", got, katTag)
	}
	// The tag, recomputed from the primitives over the golden bytes.
	golden, err := hex.DecodeString(katCanonicalHex)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(golden)
	if want := "v1." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)); got != want {
		t.Errorf("tag(katRecord) = %s, want HMAC-SHA256 of the golden encoding %s", got, want)
	}
	// And the whole record verifies with it, as an import would.
	r.Integrity = katTag
	if _, err := s.verify(1, r); err != nil {
		t.Errorf("verify(katRecord with its known tag) = %v", err)
	}
}
