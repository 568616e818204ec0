package server

import (
	"context"
	"encoding/hex"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/tap"
)

func TestNewRequestIDIsUniqueHex(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := newRequestID()
		if _, err := hex.DecodeString(id); err != nil || len(id) != 32 || !validRequestID(id) {
			t.Fatalf("newRequestID() = %q, want 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("newRequestID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestBeginDropsReservedKeysFromNetworkCalls(t *testing.T) {
	in := metadata.Pairs(keyClientCN, "admin", reservedPrefix+"other", "x", "x-tenant-id", "t", requestIDHeaderKey, "abc-1")
	// What the transport does: the tap sees the metadata before the stream starts.
	tapped, err := tapReserved(metadata.NewIncomingContext(context.Background(), in), &tap.Info{Header: in})
	if err != nil {
		t.Fatal(err)
	}
	ctx, c := begin(tapped)
	md, _ := metadata.FromIncomingContext(ctx)
	for k := range md {
		if len(k) >= len(reservedPrefix) && k[:len(reservedPrefix)] == reservedPrefix {
			t.Errorf("reserved key %q reached the handler", k)
		}
	}
	if got := md.Get("x-tenant-id"); len(got) != 1 || got[0] != "t" {
		t.Errorf("x-tenant-id = %q, want it kept", got)
	}
	if c.requestID != "abc-1" || RequestID(ctx) != "abc-1" {
		t.Errorf("request id = %q / %q, want the caller's abc-1", c.requestID, RequestID(ctx))
	}
	if got := in.Get(keyClientCN); len(got) != 1 {
		t.Errorf("begin changed the caller's metadata: %v", in)
	}

	// Metadata without reserved keys is passed on as it is, context and all.
	plain := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-tenant-id", "t"))
	if got, err := tapReserved(plain, &tap.Info{Header: metadata.Pairs("x-tenant-id", "t")}); err != nil || got != plain {
		t.Errorf("tapReserved(no reserved keys) = %v, %v; want the same context", got, err)
	}
}
