package client

import (
	"context"
	"time"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// SessionInfo is one of a person's open sessions: one per login.
type SessionInfo struct {
	ID              string    `json:"sessionId"`
	CreatedAt       time.Time `json:"createdAt"`       // the login
	LastRefreshedAt time.Time `json:"lastRefreshedAt"` // the login, or the last token refresh
	RemoteAddr      string    `json:"remoteAddr"`      // the client address of the login, as core saw it
	UserAgent       string    `json:"userAgent"`       // the client software of the login as it named itself
	Current         bool      `json:"current"`         // the session this client is using
}

// Sessions lists the caller's open sessions, newest first (people only: a machine credential
// gets PERMISSION_DENIED).
func (c *Client) Sessions(ctx context.Context) ([]SessionInfo, error) {
	r := &corev1.ListSessionsResponse{}
	cl := call{method: corev1.AuthService_ListSessions_FullMethodName, verb: "GET", path: "/v1/auth/sessions", auth: true}
	if err := c.invoke(ctx, cl, &corev1.ListSessionsRequest{}, r); err != nil {
		return nil, err
	}
	out := make([]SessionInfo, 0, len(r.GetSessions()))
	for _, s := range r.GetSessions() {
		out = append(out, SessionInfo{ID: s.GetSessionId(), CreatedAt: tsTime(s.GetCreatedAt()), LastRefreshedAt: tsTime(s.GetLastRefreshedAt()),
			RemoteAddr: s.GetRemoteAddr(), UserAgent: s.GetUserAgent(), Current: s.GetCurrent()})
	}
	return out, nil
}

// RevokeSession ends one of the caller's sessions at once: its tokens stop working. NOT_FOUND for
// a session that is not one of theirs or has ended. Revoking the current session ends this
// client's session too; it then needs a new login.
func (c *Client) RevokeSession(ctx context.Context, id string) error {
	cl := call{method: corev1.AuthService_RevokeSession_FullMethodName, verb: "POST", path: "/v1/auth/sessions/" + esc(id) + ":revoke",
		body: true, auth: true, ids: []pathID{{"sessionId", id}}}
	return c.invoke(ctx, cl, &corev1.RevokeSessionRequest{SessionId: id}, &corev1.RevokeSessionResponse{})
}
