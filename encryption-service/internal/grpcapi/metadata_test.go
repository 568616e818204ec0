package grpcapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// TestMetadataWireForm holds the contract's metadata to the seed's JSON object as the gateway
// writes it (with its marshal options): formatVersion a number, byte strings in standard padded
// base64, encryptedKey only for RSA-OAEP-3072-SHA256; and the JSON reads back to the same metadata.
func TestMetadataWireForm(t *testing.T) {
	for _, alg := range aead.Algorithms() {
		key, err := aead.NewKey(alg, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := aead.New(alg, key)
		if err != nil {
			t.Fatal(err)
		}
		_, meta, err := c.Encrypt([]byte("x"), []byte("ad"))
		if err != nil {
			t.Fatal(err)
		}
		js, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(metadataProto(meta))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(js, &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"formatVersion": 1.0, "nonce": base64.StdEncoding.EncodeToString(meta.Nonce)}
		if meta.EncryptedKey != nil {
			want["encryptedKey"] = base64.StdEncoding.EncodeToString(meta.EncryptedKey)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: metadata JSON = %s; want %v", alg, js, want)
		}
		var back encryptionv1.CipherMetadata
		if err := protojson.Unmarshal(js, &back); err != nil {
			t.Fatal(err)
		}
		if m := metadataFrom(&back); !reflect.DeepEqual(m, meta) || m.Check(alg) != nil {
			t.Errorf("%s: metadataFrom(JSON) = %+v; want %+v", alg, m, meta)
		}
	}
	if m := metadataFrom(nil); m.Check(aead.AES256GCM) == nil {
		t.Error("absent metadata passes Check")
	}
}

func TestPolicyFrom(t *testing.T) {
	tests := []struct {
		name string
		in   *encryptionv1.RotationPolicy
		want keyring.RotationPolicy
		msg  string // error mention; "" for success
	}{
		{"absent", nil, keyring.RotationPolicy{}, ""},
		{"both", &encryptionv1.RotationPolicy{MaxAge: durationpb.New(90 * 24 * time.Hour), MaxEncryptions: 1000},
			keyring.RotationPolicy{MaxAge: 90 * 24 * time.Hour, MaxEncryptions: 1000}, ""},
		{"negative age", &encryptionv1.RotationPolicy{MaxAge: durationpb.New(-time.Hour)}, keyring.RotationPolicy{}, "rotationPolicy.maxAge"},
		{"invalid duration", &encryptionv1.RotationPolicy{MaxAge: &durationpb.Duration{Seconds: 1, Nanos: -1}}, keyring.RotationPolicy{}, "rotationPolicy.maxAge"},
		{"count over int64", &encryptionv1.RotationPolicy{MaxEncryptions: 1 << 63}, keyring.RotationPolicy{}, "rotationPolicy.maxEncryptions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policyFrom(tt.in)
			if tt.msg == "" {
				if err != nil || got != tt.want {
					t.Errorf("policyFrom() = %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if !errs.Is(err, errs.Invalid) || !bytes.Contains([]byte(err.Error()), []byte(tt.msg)) {
				t.Errorf("policyFrom() = %v, want Invalid naming %s", err, tt.msg)
			}
		})
	}
	if p := policyToProto(keyring.RotationPolicy{}); p.MaxAge != nil || p.MaxEncryptions != 0 {
		t.Errorf("policyToProto(zero) = %v, want no maxAge and 0", p)
	}
}

func TestIDTextIsCanonical(t *testing.T) {
	for _, given := range []string{"123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000"} {
		id, err := parseID("encryptionId", given)
		if err != nil {
			t.Fatal(err)
		}
		if got := idText(id, given); got != "123e4567-e89b-12d3-a456-426614174000" {
			t.Errorf("idText(%q) = %q, want the lower-case form", given, got)
		}
	}
}
