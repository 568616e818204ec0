package esclient

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/custos-platform/custos/core/internal/errs"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// The stored form of metadata must not depend on the protocol: it is what encoding/json makes of
// the seed's object (sorted keys, standard padded base64), which the HTTPS/JSON client stores.
func TestMetadataJSONIsTheSeedObject(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb}, 384)
	for _, m := range []*encryptionv1.CipherMetadata{
		{FormatVersion: 1, Nonce: bytes.Repeat([]byte{0xff}, 12)},
		{FormatVersion: 1, Nonce: bytes.Repeat([]byte{0x3e}, 24)},
		{FormatVersion: 1, Nonce: bytes.Repeat([]byte{1}, 12), EncryptedKey: key},
	} {
		obj := map[string]any{"formatVersion": m.GetFormatVersion(), "nonce": base64.StdEncoding.EncodeToString(m.GetNonce())}
		if m.EncryptedKey != nil {
			obj["encryptedKey"] = base64.StdEncoding.EncodeToString(m.GetEncryptedKey())
		}
		want, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		got := metadataJSON(m)
		if !bytes.Equal(got, want) {
			t.Fatalf("metadataJSON = %s\nwant            %s", got, want)
		}
		back, err := metadataToProto(got)
		if err != nil || !proto.Equal(back, m) {
			t.Fatalf("metadataToProto(metadataJSON(m)) = %v, %v; want %v", back, err, m)
		}
	}
}

func TestMetadataToProtoRefusesWhatIsNotMetadata(t *testing.T) {
	for _, tc := range []struct{ in, field string }{
		{`{"formatVersion":1,"nonce":"AAECAwQFBgcICQoL","extra":1}`, `unknown field "extra"`},
		{`{"formatVersion":1.5,"nonce":"AAECAwQFBgcICQoL"}`, "metadata.formatVersion"},
		{`{"formatVersion":1,"nonce":"not base64!"}`, "metadata.nonce"},
		{`{"formatVersion":1,"nonce":7}`, "metadata"},
		{`{"formatVersion":1,"nonce":"AAECAwQFBgcICQoL","encryptedKey":"%%"}`, "metadata.encryptedKey"},
		{`[1]`, "metadata"},
		{`{"` + strings.Repeat("k", 5000) + `":1}`, `unknown field "kkkk`},
	} {
		m, err := metadataToProto(json.RawMessage(tc.in))
		if errs.KindOf(err) != errs.Invalid || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("metadataToProto(%s) = %v, %v; want Invalid naming %s", tc.in, m, err, tc.field)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("metadataToProto(%.40s…): error of %d characters", tc.in, len(err.Error()))
		}
		if err != nil && strings.Contains(err.Error(), "AAECAwQFBgcICQoL") {
			t.Errorf("metadataToProto(%s): error %q echoes a value", tc.in, err)
		}
	}
}
