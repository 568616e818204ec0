package server

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBodyErrorNamesTheFieldWithoutEchoingTheValue(t *testing.T) {
	for _, sep := range []string{" ", "\u00a0"} {
		tests := []struct{ in, want string }{
			{"proto:" + sep + `(line 1:69): invalid value for bytes field cipherText: "@@@secret"`,
				"cipherText: invalid value (want standard base64) at line 1, column 69 of the request body"},
			{"proto:" + sep + `(line 2:3): invalid value for string field data: 12345`,
				"data: invalid value (want a string) at line 2, column 3 of the request body"},
			{"proto:" + sep + `(line 1:2): invalid value for uint32 field limit: "x"`,
				"limit: invalid value (want a number) at line 1, column 2 of the request body"},
			{"proto:" + sep + `(line 1:2): unknown field "plaintext"`,
				`request body: (line 1:2): unknown field "plaintext"`},
			{"proto:" + sep + `syntax error (line 1:14): unexpected token hunter2`,
				`request body: syntax error (line 1:14): unexpected token (not shown)`},
			{"proto:" + sep + `syntax error (line 1:7): invalid value hunter2`,
				`request body: syntax error (line 1:7): invalid value (not shown)`},
		}
		for _, tt := range tests {
			got := status.Convert(bodyError(status.Error(codes.InvalidArgument, tt.in)))
			if got.Code() != codes.InvalidArgument || got.Message() != tt.want {
				t.Errorf("bodyError(%q) = %v %q, want InvalidArgument %q", tt.in, got.Code(), got.Message(), tt.want)
			}
		}
	}
	long := status.Error(codes.InvalidArgument, "proto: (line 1:1): invalid UTF-8 in string "+strings.Repeat("é", 500))
	if msg := status.Convert(bodyError(long)).Message(); len(msg) > 210 || !utf8.ValidString(msg) {
		t.Errorf("long decoding error became %d bytes (valid UTF-8: %v), want it cut to about 200", len(msg), utf8.ValidString(msg))
	}
	for _, err := range []error{
		status.Error(codes.InvalidArgument, "encryptionId: want a UUID"),
		status.Error(codes.NotFound, "proto: not ours"),
	} {
		if got := bodyError(err); !errors.Is(got, err) {
			t.Errorf("bodyError(%v) = %v, want it unchanged", err, got)
		}
	}
}
