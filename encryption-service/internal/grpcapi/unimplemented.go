package grpcapi

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// unimplementedError turns the generated "method X not implemented" answer into a message a
// caller can act on: which RPC, and that this release of component does not offer it. Other
// errors, Unimplemented ones of the service's own making included, pass unchanged.
func unimplementedError(component, fullMethod string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unimplemented || !strings.HasPrefix(st.Message(), "method ") {
		return err
	}
	return status.Error(codes.Unimplemented,
		fmt.Sprintf("%s is not implemented by this release of %s", strings.TrimPrefix(fullMethod, "/"), component))
}
