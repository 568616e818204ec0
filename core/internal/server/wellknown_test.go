package server

import (
	"errors"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	_ "google.golang.org/protobuf/types/known/durationpb"  // registers google/protobuf/duration.proto
	_ "google.golang.org/protobuf/types/known/timestamppb" // and timestamp.proto
)

// secretValue stands for what a caller may put where a time or a duration belongs: a password
// pasted in the wrong field, say.
const secretValue = "Zq9s3cr3tVALUE"

// TestTimeAndDurationErrorsNameTheFieldNotTheValue: protojson quotes a malformed or out-of-range
// google.protobuf.Timestamp or Duration value, and not its field; the gateway's answer (and the
// access log) name the field and type and show no value.
func TestTimeAndDurationErrorsNameTheFieldNotTheValue(t *testing.T) {
	policy := mustMessage(t, "Policy", field("max_age", "maxAge", ".google.protobuf.Duration", false))
	entry := mustMessage(t, "LabelsEntry", field("key", "key", "", false), field("value", "value", ".google.protobuf.Timestamp", false))
	entry.Options = &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)}
	labels := field("labels", "labels", ".test.Request.LabelsEntry", true)
	req := mustMessage(t, "Request",
		field("expires_at", "expiresAt", ".google.protobuf.Timestamp", false),
		field("times", "times", ".google.protobuf.Timestamp", true),
		field("policy", "rotationPolicy", ".test.Policy", false),
		labels,
	)
	req.NestedType = []*descriptorpb.DescriptorProto{entry}
	newRequest := mustFile(t, policy, req)

	tm := "google.protobuf.Timestamp value (not shown; want an RFC 3339 time"
	for _, tt := range []struct {
		name, body, want string
	}{
		{"timestamp", `{"expiresAt": "` + secretValue + `"}`, "expiresAt: invalid " + tm},
		{"timestamp by its proto name", `{"expires_at": "` + secretValue + `"}`, "expiresAt: invalid " + tm},
		{"timestamp out of range", `{"expiresAt": "0000-12-31T00:00:00Z"}`, "expiresAt: " + tm[:len("google.protobuf.Timestamp value")] + " out of range (not shown"},
		{"timestamp in a list", `{"times": ["2026-01-01T00:00:00Z",` + "\n" + `  "` + secretValue + `"]}`, "times: invalid " + tm},
		{"duration in a nested message", `{"rotationPolicy": {"maxAge": "` + secretValue + `"}}`,
			"rotationPolicy.maxAge: invalid google.protobuf.Duration value (not shown; want seconds with the suffix s"},
		{"timestamp under a map key", `{"labels": {"` + secretValue + `": "` + secretValue + `"}}`, "labels: invalid " + tm},
		{"after non-ASCII text", `{"times": ["2026-01-01T00:00:00Z"], "rotationPolicy": {}, "labels": {"é€": "2026-01-01T00:00:00Z"}, "expiresAt": "` + secretValue + `"}`,
			"expiresAt: invalid " + tm},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dec := strictJSON{&runtime.JSONPb{}}.NewDecoder(strings.NewReader(tt.body))
			err := dec.Decode(newRequest())
			if err == nil {
				t.Fatalf("Decode(%s) = nil, want an error", tt.body)
			}
			// As the gateway passes a decoding error on.
			got := status.Convert(gatewayError(status.Errorf(codes.InvalidArgument, "%v", err))).Message()
			if !strings.HasPrefix(got, tt.want) || strings.Contains(got, secretValue) || strings.Contains(got, "0000-12-31") {
				t.Errorf("Decode(%s): answer %q, want it to start %q and show no value", tt.body, got, tt.want)
			}
		})
	}

	// protojson's messages as they are, when the decoder could not tell the field: type and place.
	for _, sep := range []string{" ", "\u00a0"} {
		for _, tt := range []struct{ in, want string }{
			{"proto:" + sep + `(line 1:14): invalid google.protobuf.Timestamp value "` + secretValue + `"`,
				"request body: invalid " + tm + " from year 1 to 9999, such as 2026-01-02T15:04:05Z) at line 1, column 14 of the request body"},
			{"proto:" + sep + `(line 2:3): google.protobuf.Duration value out of range: "` + secretValue + `"`,
				"request body: google.protobuf.Duration value out of range (not shown; want seconds with the suffix s, such as 3600s or 0.5s) at line 2, column 3 of the request body"},
			{"proto:" + sep + `(line 1:9): invalid google.protobuf.Value: ` + secretValue,
				"request body: invalid google.protobuf.Value value (not shown) at line 1, column 9 of the request body"},
		} {
			if got := status.Convert(bodyError(status.Error(codes.InvalidArgument, tt.in))).Message(); got != tt.want {
				t.Errorf("bodyError(%q) = %q, want %q", tt.in, got, tt.want)
			}
		}
	}
	// A spoof: a value written to look like the decoder's field name stays a value.
	spoof := errors.New(`proto: (line 1:2): invalid google.protobuf.Timestamp value " in field ` + secretValue + `"`)
	if got := status.Convert(bodyError(status.Error(codes.InvalidArgument, spoof.Error()))).Message(); strings.Contains(got, secretValue) {
		t.Errorf("bodyError(%q) = %q, shows the value", spoof, got)
	}
}

// field describes a string field, or one of message typeName.
func field(name, jsonName, typeName string, repeated bool) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{
		Name: proto.String(name), JsonName: proto.String(jsonName),
		Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		Type:  descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
	}
	if repeated {
		f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	}
	if typeName != "" {
		f.Type, f.TypeName = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), proto.String(typeName)
	}
	return f
}

// mustMessage describes a message of fields, numbered from 1.
func mustMessage(tb testing.TB, name string, fields ...*descriptorpb.FieldDescriptorProto) *descriptorpb.DescriptorProto {
	tb.Helper()
	for i, f := range fields {
		f.Number = proto.Int32(int32(i + 1))
	}
	return &descriptorpb.DescriptorProto{Name: proto.String(name), Field: fields}
}

// mustFile builds package test of msgs and returns a constructor of its last message.
func mustFile(tb testing.TB, msgs ...*descriptorpb.DescriptorProto) func() proto.Message {
	tb.Helper()
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("test/wellknown.proto"), Package: proto.String("test"), Syntax: proto.String("proto3"),
		Dependency:  []string{"google/protobuf/timestamp.proto", "google/protobuf/duration.proto"},
		MessageType: msgs,
	}, protoregistry.GlobalFiles)
	if err != nil {
		tb.Fatal(err)
	}
	md := fd.Messages().Get(len(msgs) - 1)
	return func() proto.Message { return dynamicpb.NewMessage(md) }
}
