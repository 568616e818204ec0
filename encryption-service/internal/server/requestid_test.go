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
	tappedCtx, err := tapMetadata(metadata.NewIncomingContext(context.Background(), in), &tap.Info{Header: in})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	ctx, c, _ := s.begin(tappedCtx)
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

	if got := Incoming(ctx, keyClientCN); got != nil {
		t.Errorf("Incoming(%s) = %q, want nothing", keyClientCN, got)
	}
	if got := Incoming(ctx, "x-tenant-id"); len(got) != 1 || got[0] != "t" {
		t.Errorf("Incoming(x-tenant-id) = %q, want [t]", got)
	}

	// Without a tap (a context the transport did not make) the context's metadata is read.
	ctx, c, _ = s.begin(metadata.NewIncomingContext(context.Background(), in))
	if got := Incoming(ctx, reservedPrefix+"other"); got != nil || c.requestID != "abc-1" {
		t.Errorf("untapped: Incoming(reserved) = %q, request id %q; want nothing and abc-1", got, c.requestID)
	}
	if got := Incoming(context.Background(), "x-tenant-id"); got != nil {
		t.Errorf("Incoming outside a call = %q, want nothing", got)
	}
}
