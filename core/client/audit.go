package client

import (
	"context"
	"iter"
	"time"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// AuditEvent is one entry of the tenant's audit trail: a login, a refusal, a change. It never
// holds plaintext, keys or secrets.
type AuditEvent struct {
	ID         string    `json:"eventId"`
	Time       time.Time `json:"time"`
	ActorType  string    `json:"actorType"` // user, apikey, anonymous, or system (core's own work, e.g. keys.erase)
	ActorID    string    `json:"actorId"`   // the user's or API key's id, when known
	Action     string    `json:"action"`    // e.g. auth.login, user.disable, authz.denied
	Target     string    `json:"target"`    // the object acted on, e.g. user:<id>
	Outcome    string    `json:"outcome"`   // ok, or the gRPC code name of the failure
	RemoteAddr string    `json:"remoteAddr"`
	RequestID  string    `json:"requestId"`
	TenantID   string    `json:"tenantId,omitempty"` // the tenant it concerns; empty for platform events
}

func auditEventFrom(pb *corev1.AuditEvent) AuditEvent {
	return AuditEvent{ID: pb.GetEventId(), Time: tsTime(pb.GetTime()), ActorType: pb.GetActorType(), ActorID: pb.GetActorId(),
		Action: pb.GetAction(), Target: pb.GetTarget(), Outcome: pb.GetOutcome(), RemoteAddr: pb.GetRemoteAddr(), RequestID: pb.GetRequestId(),
		TenantID: pb.GetTenantId()}
}

// AuditFilter selects audit events; zero fields select everything.
type AuditFilter struct {
	ActorID  string // only this user's or API key's events (a UUID)
	Action   string // only this action, e.g. "user.disable"
	PageSize int    // events fetched per request: 1 to 1000 (100 when 0 or less, 1000 when more)
	// TenantID, for the platform admin, selects one tenant's events (deleted tenants' too); empty
	// selects every event of the platform. Others may leave it empty or name their own tenant.
	TenantID string
}

// AuditEvents iterates over the audit events that f selects, newest first: the caller's tenant's
// for its owners and admins, any tenant's or the whole platform's for the platform admin (others
// PERMISSION_DENIED, also for another TenantID). Core answers INVALID_ARGUMENT for an ActorID or
// TenantID that is not a UUID.
func (c *Client) AuditEvents(ctx context.Context, f AuditFilter) iter.Seq2[AuditEvent, error] {
	size := int32(100)
	if f.PageSize > 1000 {
		size = 1000
	} else if f.PageSize > 0 {
		size = int32(f.PageSize)
	}
	return pages(func(token string) ([]AuditEvent, string, error) {
		q := pageQuery(int(size), token)
		if f.ActorID != "" {
			q.Set("actorId", f.ActorID)
		}
		if f.Action != "" {
			q.Set("action", f.Action)
		}
		if f.TenantID != "" {
			q.Set("tenantId", f.TenantID)
		}
		r := &corev1.ListAuditEventsResponse{}
		cl := call{method: corev1.AuditService_ListAuditEvents_FullMethodName, verb: "GET", path: "/v1/audit", query: q, auth: true}
		req := &corev1.ListAuditEventsRequest{ActorId: f.ActorID, Action: f.Action, PageSize: size, PageToken: token, TenantId: f.TenantID}
		if err := c.invoke(ctx, cl, req, r); err != nil {
			return nil, "", err
		}
		out := make([]AuditEvent, 0, len(r.GetEvents()))
		for _, e := range r.GetEvents() {
			out = append(out, auditEventFrom(e))
		}
		return out, r.GetNextPageToken(), nil
	})
}
