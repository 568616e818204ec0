package server

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestGatewayErrorNamesWithoutQuoting(t *testing.T) {
	tests := []struct{ in, want string }{
		{`parsing field "page_size": strconv.ParseInt: parsing "SECRET": invalid syntax`, "query parameter pageSize: invalid value"},
		{`parsing field "state": "SECRET" is not a valid value`, "query parameter state: invalid value"},
		{`too many values for field "cursor": SECRET, b`, "query parameter cursor: given more than once"},
		{`duplicate field "page_size"`, "query parameter pageSize: given more than once"},
		{`invalid grpc-timeout: SECRET`, "Grpc-Timeout header: invalid value (want digits and a unit, such as 10S)"},
		{`type mismatch, parameter: job_id, error: SECRET`, "path parameter jobId: invalid value"},
		{"invalid escape sequence `\\u00\"SECRET` in string", "malformed request"},
		{`request body: not valid JSON (at byte 12)`, "request body: not valid JSON (at byte 12)"},
		{`request body: only whitespace may follow the JSON value`, "request body: only whitespace may follow the JSON value"},
		{`proto: (line 1:2): invalid value for string field data: SECRET`, "data: invalid value (want a string) at line 1, column 2 of the request body"},
	}
	for _, tt := range tests {
		got := status.Convert(gatewayError(status.Error(codes.InvalidArgument, tt.in)))
		if got.Code() != codes.InvalidArgument || got.Message() != tt.want || strings.Contains(got.Message(), "SECRET") {
			t.Errorf("gatewayError(%q) = %v %q, want InvalidArgument %q", tt.in, got.Code(), got.Message(), tt.want)
		}
	}
	for _, err := range []error{
		status.Error(codes.NotFound, "Not Found"),
		status.Error(codes.Unimplemented, "Method Not Allowed"),
		errors.New("not a status"),
	} {
		if got := gatewayError(err); !errors.Is(got, err) {
			t.Errorf("gatewayError(%v) = %v, want it unchanged", err, got)
		}
	}
}

func TestSafeErrorPassesUnchanged(t *testing.T) {
	err := status.Error(codes.InvalidArgument, "record 2: the export ended with an error here")
	got := gatewayError(SafeError(err))
	if st := status.Convert(got); st.Code() != codes.InvalidArgument || st.Message() != "record 2: the export ended with an error here" {
		t.Errorf("gatewayError(SafeError(%v)) = %v, want it unchanged", err, got)
	}
	if st := status.Convert(SafeError(err)); st.Code() != codes.InvalidArgument {
		t.Errorf("SafeError(%v) has code %v, want InvalidArgument", err, st.Code())
	}
	if SafeError(nil) != nil {
		t.Error("SafeError(nil) != nil")
	}
}
