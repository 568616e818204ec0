package grpcapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/server"
)

// codeOf is the one table from the service's error kinds to gRPC codes (and, through the gateway,
// HTTP statuses).
var codeOf = map[errs.Kind]codes.Code{
	errs.Internal:           codes.Internal,
	errs.Invalid:            codes.InvalidArgument,
	errs.Unauthenticated:    codes.Unauthenticated,
	errs.PermissionDenied:   codes.PermissionDenied,
	errs.NotFound:           codes.NotFound,
	errs.Conflict:           codes.AlreadyExists,
	errs.FailedPrecondition: codes.FailedPrecondition,
	errs.ResourceExhausted:  codes.ResourceExhausted,
	errs.Unavailable:        codes.Unavailable,
}

// toStatus turns err into a gRPC status error. *errs.Error values keep their safe message;
// internal errors and anything unclassified are logged with the request id and answered with a
// generic message that carries only that id.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	var e *errs.Error
	switch {
	case errors.As(err, &e) && e.Kind != errs.Internal:
		if e.Err != nil {
			log.DebugContext(ctx, "request failed", "method", method, "request_id", server.RequestID(ctx), "kind", e.Kind.String(), "cause", e.Err)
		}
		return status.Error(codeOf[e.Kind], e.Message)
	case e == nil && errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case e == nil && errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	if _, ok := status.FromError(err); ok && e == nil {
		return err
	}
	log.ErrorContext(ctx, "internal error", "method", method, "request_id", server.RequestID(ctx), "error", err)
	return status.Errorf(codes.Internal, "internal error; quote request id %s to the operator", server.RequestID(ctx))
}
