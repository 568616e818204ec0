package grpcapi

import (
	"context"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/custos-platform/custos/core/internal/auth"
	"github.com/custos-platform/custos/core/internal/authz"
	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/server"
)

// Authenticator checks the two kinds of credential.
type Authenticator interface {
	AuthenticateBearer(ctx context.Context, r auth.Request, bearer string) (principal.Principal, error)
	AuthenticateAPIKey(ctx context.Context, r auth.Request, keyID, secret string) (principal.Principal, error)
}

var _ Authenticator = (*auth.Service)(nil)

// Auditor records authorization refusals.
type Auditor interface {
	InsertAudit(ctx context.Context, e postgres.AuditEvent) error
}

// Guard authenticates every call (Authorization: Bearer, or X-Api-Key with X-Api-Secret) and then
// authorizes it by the one policy table, authz.Policy, before any service runs. Refusals are
// audited. Calls outside custos.core.v1 (gRPC health) pass.
type Guard struct {
	Auth  Authenticator
	Audit Auditor
}

// Interceptors returns the unary and stream interceptors. Besides the policy's refusals, they
// audit those a service makes itself (PermissionDenied from the handler: an admin making an owner,
// a tenant admin reading another tenant's audit trail, a wrong client master key…).
func (g *Guard) Interceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := g.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		g.deniedBy(ctx, info.FullMethod, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := g.check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		err = handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
		g.deniedBy(ctx, info.FullMethod, err)
		return err
	}
	return unary, stream
}

// deniedBy audits err when it is a refusal (PermissionDenied) a service made for the caller of ctx.
func (g *Guard) deniedBy(ctx context.Context, method string, err error) {
	if err == nil || !strings.HasPrefix(method, "/custos.core.v1.") || !errs.Is(err, errs.PermissionDenied) {
		return
	}
	if p := principal.FromContext(ctx); p.Kind != principal.Anonymous {
		g.deny(context.WithoutCancel(ctx), request(ctx), p, method)
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// loginRequest is request with the client software, which a call that starts a session records.
func loginRequest(ctx context.Context) auth.Request {
	r := request(ctx)
	r.UserAgent = server.UserAgent(ctx)
	return r
}

// request describes the call for throttling and the audit trail.
func request(ctx context.Context) auth.Request {
	r := auth.Request{RequestID: server.RequestID(ctx)}
	r.RemoteAddr, _ = server.RemoteAddr(ctx)
	return r
}

func (g *Guard) check(ctx context.Context, method string) (context.Context, error) {
	if !strings.HasPrefix(method, "/custos.core.v1.") {
		return ctx, nil
	}
	r := request(ctx)
	p, err := g.authenticate(ctx, r)
	if err != nil {
		rule, ok := authz.Policy[method]
		if !ok || !rule.Public {
			return nil, err
		}
		// A public call (login, refresh, logout, …) needs no credential: one a client sends along
		// anyway, such as an expired access token, must not make it fail.
		p = principal.Principal{Kind: principal.Anonymous, RemoteAddr: r.RemoteAddr}
	}
	d := authz.Allow(method, p)
	if !d.Allowed {
		if p.Kind == principal.Anonymous {
			return nil, errs.E(errs.Unauthenticated, "authentication required: send Authorization: Bearer <access token>, or X-Api-Key and X-Api-Secret")
		}
		g.deny(ctx, r, p, method)
		return nil, errs.E(errs.PermissionDenied, "%s", d.Reason)
	}
	return principal.NewContext(ctx, p), nil
}

func (g *Guard) authenticate(ctx context.Context, r auth.Request) (principal.Principal, error) {
	bearer := server.Incoming(ctx, "authorization")
	keyID, secret := server.Incoming(ctx, "x-api-key"), server.Incoming(ctx, "x-api-secret")
	switch {
	case len(bearer) > 0 && (len(keyID) > 0 || len(secret) > 0):
		return principal.Principal{}, errs.E(errs.Invalid, "send either Authorization or X-Api-Key and X-Api-Secret, not both")
	case len(bearer) > 0:
		if len(bearer) != 1 {
			return principal.Principal{}, errs.E(errs.Invalid, "Authorization: sent more than once")
		}
		tok, ok := strings.CutPrefix(bearer[0], "Bearer ")
		if !ok {
			return principal.Principal{}, errs.E(errs.Unauthenticated, "Authorization: want \"Bearer <access token>\"")
		}
		return g.Auth.AuthenticateBearer(ctx, r, strings.TrimSpace(tok))
	case len(keyID) > 0 || len(secret) > 0:
		if len(keyID) != 1 || len(secret) != 1 {
			return principal.Principal{}, errs.E(errs.Unauthenticated, "machine credential: send exactly one X-Api-Key and one X-Api-Secret")
		}
		return g.Auth.AuthenticateAPIKey(ctx, r, keyID[0], secret[0])
	default:
		return principal.Principal{Kind: principal.Anonymous, RemoteAddr: r.RemoteAddr}, nil
	}
}

func (g *Guard) deny(ctx context.Context, r auth.Request, p principal.Principal, method string) {
	id := p.ID
	e := postgres.AuditEvent{
		ActorType: string(p.Kind), ActorID: &id, Action: "authz.denied", Target: strings.TrimPrefix(method, "/"),
		Outcome: "PERMISSION_DENIED", RemoteAddr: r.RemoteAddr, RequestID: r.RequestID,
	}
	if p.TenantID != uuid.Nil {
		t := p.TenantID
		e.TenantID = &t
	}
	_ = g.Audit.InsertAudit(ctx, e)
}
