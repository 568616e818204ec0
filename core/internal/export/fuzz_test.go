package export

import (
	"bytes"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/errs"
)

// FuzzCanonicalJSON: canonicalJSON never panics, and what it returns is a fixed point: the
// canonical form of canonical metadata is itself (a verified record re-canonicalises identically).
// go test -run=^$ -fuzz=FuzzCanonicalJSON ./internal/export/
func FuzzCanonicalJSON(f *testing.F) {
	f.Add([]byte(`{"formatVersion":1,"nonce":"bm9uY2U="}`))
	f.Add([]byte(`{ "b": 1.0, "a": [1e21, -0, "<&>"], "c": {"\u00e9": null} }`))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"x":"\ud800"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := canonicalJSON(raw)
		if err != nil {
			return
		}
		again, err := canonicalJSON(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("canonicalJSON(%q) = %q, which re-canonicalises to %q, %v", raw, out, again, err)
		}
	})
}

// FuzzVerify plays an exporter that tags whatever record the fuzzer makes, then checks verify:
// it never panics; a record it accepts yields an item that exports again to the very same
// canonical encoding and tag; and any single-byte change to a covered string field or to the tag
// (or its truncation) is refused as Invalid. A change to the metadata is refused unless it
// canonicalises to the same bytes (for instance "\u003c" for "\u003C"), which is not a change.
// go test -run=^$ -fuzz=FuzzVerify ./internal/export/
func FuzzVerify(f *testing.F) {
	r := katRecord()
	f.Add(r.ID, r.OwnerID, int32(3), r.CipherText, r.EncryptionID, r.VersionID, r.Algorithm, []byte(r.Metadata),
		r.CreatedAt.UnixNano(), r.UpdatedAt.UnixNano(), uint8(0), uint(0), byte(1))
	f.Add(r.ID, r.OwnerID, int32(1), "x", r.EncryptionID, r.VersionID, "RSA-OAEP-3072-SHA256", []byte(`{"a":"<>"}`),
		int64(1000), int64(1000), uint8(7), uint(20), byte(0x20))
	f.Add("00000000-0000-4000-8000-00000000000A", r.OwnerID, int32(1), "x", r.EncryptionID, r.VersionID, "a", []byte(`{}`),
		int64(1), int64(1), uint8(3), uint(5), byte(0x80))
	f.Add("", "", int32(0), "", "", "", "", []byte(`not json`), int64(0), int64(0), uint8(0), uint(0), byte(0))
	s := New(nil, mustKey(f, testSecret()))
	f.Fuzz(func(t *testing.T, id, owner string, rev int32, ct, enc, ver, alg string, meta []byte,
		created, updated int64, field uint8, pos uint, mask byte) {
		r := Record{ID: id, OwnerID: owner, Revision: rev, CipherText: ct, EncryptionID: enc, VersionID: ver,
			Algorithm: alg, Metadata: meta, CreatedAt: time.Unix(0, created).UTC(), UpdatedAt: time.Unix(0, updated).UTC()}
		// The exporter's side: canonical metadata, then the tag.
		canon, err := canonicalJSON(meta)
		if err != nil {
			r.Integrity = s.tag(r)
			if _, err := s.verify(1, r); !errs.Is(err, errs.Invalid) {
				t.Fatalf("verify(metadata %q, not an object) = %v, want Invalid", meta, err)
			}
			return
		}
		r.Metadata = canon
		r.Integrity = s.tag(r)
		item, err := s.verify(1, r)
		if err != nil {
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("verify(%+v) = %v, want nil or Invalid", r, err)
			}
			return
		}
		// Accepted: the item exports again to the same bytes and tag.
		back, err := s.record(item)
		if err != nil {
			t.Fatalf("record(verified item) = %v", err)
		}
		if !bytes.Equal(canonical(back), canonical(r)) || back.Integrity != r.Integrity {
			t.Fatalf("verified record re-exports differently:\n%x %s\n%x %s", canonical(back), back.Integrity, canonical(r), r.Integrity)
		}

		if mask == 0 {
			mask = 1
		}
		fields := []*string{&r.ID, &r.OwnerID, &r.CipherText, &r.EncryptionID, &r.VersionID, &r.Algorithm, &r.Integrity}
		if i := int(field) % (len(fields) + 1); i < len(fields) {
			p := fields[i]
			orig := *p
			b := []byte(orig)
			b[pos%uint(len(b))] ^= mask // every verified field is non-empty
			*p = string(b)
			if _, err := s.verify(1, r); !errs.Is(err, errs.Invalid) {
				t.Fatalf("verify(field %d byte %d ^ %#x) = %v, want Invalid", i, pos%uint(len(b)), mask, err)
			}
			*p = orig[:len(orig)-1]
			if _, err := s.verify(1, r); !errs.Is(err, errs.Invalid) {
				t.Fatalf("verify(field %d truncated) = %v, want Invalid", i, err)
			}
			*p = orig
			return
		}
		b := bytes.Clone(r.Metadata)
		b[pos%uint(len(b))] ^= mask
		r.Metadata = b
		_, err = s.verify(1, r)
		if recanon, cerr := canonicalJSON(b); cerr == nil && bytes.Equal(recanon, canon) {
			if err != nil {
				t.Fatalf("verify(metadata %q, the same once canonical) = %v, want nil", b, err)
			}
		} else if !errs.Is(err, errs.Invalid) {
			t.Fatalf("verify(metadata byte %d ^ %#x: %q) = %v, want Invalid", pos%uint(len(b)), mask, b, err)
		}
	})
}
