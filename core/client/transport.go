package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// call describes one unary RPC in both its forms: the gRPC method, and the REST mapping of
// proto/custos/core/v1 (google.api.http).
type call struct {
	method    string     // full gRPC method name
	verb      string     // REST: HTTP method
	path      string     // REST: path with its parameters filled in (escaped)
	query     url.Values // REST: query parameters
	body      bool       // REST: send the request as the JSON body (body: "*")
	respField string     // REST: the answer is this field of the response (response_body)
	auth      bool       // needs a credential (a session or an API key)
	masterKey bool       // carries X-Master-Key in zero-knowledge tenants
	// reauth: the request carries the caller's password or a TOTP or recovery code, so a 401 means
	// that is wrong. Such a call is never refreshed and sent again: the server would count the
	// wrong secret twice, and a refresh token would be spent for nothing. (liveSession refreshes
	// an access token about to expire before any call.)
	reauth bool
	header map[string]string
	// ids are the ids the call names (in its REST path): each must be a UUID, checked before
	// anything is sent.
	ids []pathID
}

// pathID is an id a call names, with the name of its field in core's API.
type pathID struct{ field, value string }

// maxAnswerBytes bounds one answer: a unary answer over REST, a message over gRPC. Core keeps
// its answers far below (a page of items holds at most 2 MiB of ciphertext).
const maxAnswerBytes = 64 << 20

var (
	marshal   = protojson.MarshalOptions{}
	unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true} // newer cores may add fields
	// unmarshalStrict reads export files, which must be exactly what Export wrote.
	unmarshalStrict = protojson.UnmarshalOptions{}
)

// invoke runs cl with req, filling resp. An authenticated call refused with 401 is sent once more
// after refreshing the session, unless it re-authenticates (cl.reauth). An id of cl that is not a
// UUID, or a text field of req that is not UTF-8, gets the INVALID_ARGUMENT core would answer,
// and nothing is sent.
func (c *Client) invoke(ctx context.Context, cl call, req, resp proto.Message) error {
	if err := checkIDs(cl.ids...); err != nil {
		return err
	}
	if err := checkUTF8(req.ProtoReflect(), ""); err != nil {
		return err
	}
	hdr, used, err := c.credentials(ctx, cl)
	if err != nil {
		return err
	}
	err = c.send(ctx, cl, hdr, req, resp)
	if cl.reauth {
		return err
	}
	if retry, rerr := c.refreshAfter(ctx, used, err); !retry {
		return rerr
	}
	if hdr, _, err = c.credentials(ctx, cl); err != nil {
		return err
	}
	return c.send(ctx, cl, hdr, req, resp)
}

// refreshAfter decides what to do after a call that sent the access token used ended with err:
// on a 401 it refreshes the session and reports retry, so that the caller sends the call again.
// Otherwise it returns err, or the refresh's error (ErrSessionExpired when the refresh token was
// refused, the caller's cancellation when ctx ended meanwhile).
func (c *Client) refreshAfter(ctx context.Context, used string, err error) (retry bool, _ error) {
	if used == "" || !errors.Is(err, ErrUnauthenticated) {
		return false, err
	}
	if rerr := c.refresh(ctx, used); rerr != nil {
		return false, rerr
	}
	if perr := ctxErr(ctx); perr != nil {
		return false, perr
	}
	return true, nil
}

// credentials returns the headers of cl: its own, the caller's credential and, where the call
// needs it in a zero-knowledge tenant, X-Master-Key. used is the access token sent, if any.
func (c *Client) credentials(ctx context.Context, cl call) (hdr map[string]string, used string, err error) {
	hdr = map[string]string{}
	for k, v := range cl.header {
		hdr[k] = v
	}
	if !cl.auth {
		return hdr, "", nil
	}
	if c.apiKey != "" {
		hdr["X-Api-Key"], hdr["X-Api-Secret"] = c.apiKey, c.apiSec
		return hdr, "", nil
	}
	s, err := c.liveSession(ctx)
	if err != nil {
		return nil, "", err
	}
	hdr["Authorization"] = "Bearer " + s.AccessToken
	if cl.masterKey && s.ZeroKnowledge {
		c.mu.Lock()
		mk := c.masterKey
		c.mu.Unlock()
		if mk == "" {
			return nil, "", ErrLocked
		}
		hdr["X-Master-Key"] = mk
	}
	return hdr, s.AccessToken, nil
}

func (c *Client) send(ctx context.Context, cl call, hdr map[string]string, req, resp proto.Message) error {
	if c.conn != nil {
		return c.sendGRPC(ctx, cl, hdr, req, resp)
	}
	return c.sendREST(ctx, cl, hdr, req, resp)
}

func (c *Client) sendGRPC(ctx context.Context, cl call, hdr map[string]string, req, resp proto.Message) error {
	callCtx, cancel := context.WithTimeoutCause(ctx, c.timeout, errCallTimeout)
	defer cancel()
	err := c.conn.Invoke(outgoing(callCtx, hdr), cl.method, req, resp)
	if err != nil && callCtx.Err() != nil {
		return c.transportError(callCtx, err)
	}
	return grpcError(err)
}

func (c *Client) sendREST(ctx context.Context, cl call, hdr map[string]string, req, resp proto.Message) error {
	var body io.Reader
	if cl.body {
		raw, err := marshal.Marshal(req)
		if err != nil {
			return fmt.Errorf("encode %s: %w", cl.method, err)
		}
		body = bytes.NewReader(raw)
	}
	status, raw, err := c.rest(ctx, cl.verb, cl.path, cl.query, hdr, body)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return restError(status, raw)
	}
	target := resp
	if cl.respField != "" {
		fd := resp.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(cl.respField))
		if fd == nil {
			return fmt.Errorf("client: %s has no field %s", cl.method, cl.respField)
		}
		target = resp.ProtoReflect().Mutable(fd).Message().Interface()
	}
	if err := unmarshal.Unmarshal(raw, target); err != nil {
		return fmt.Errorf("decode the answer of %s %s: %w", cl.verb, cl.path, err)
	}
	return nil
}

// rest sends one request, bounded by the client's timeout, and reads the whole answer: at most
// maxAnswerBytes (a longer one is refused as too large, not cut short).
func (c *Client) rest(ctx context.Context, verb, path string, query url.Values, hdr map[string]string, body io.Reader) (int, []byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, errCallTimeout)
	defer cancel()
	resp, err := c.do(ctx, verb, path, query, hdr, body)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return 0, nil, c.transportError(ctx, err)
	}
	if len(raw) > maxAnswerBytes {
		return 0, nil, fmt.Errorf("answer too large: core answered %s %s with more than %d MiB, the most the client reads in one answer", verb, path, maxAnswerBytes>>20)
	}
	return resp.StatusCode, raw, nil
}

// errCallTimeout is the cause of a unary call's context when the client's own timeout
// (WithTimeout) ends it, told apart from the caller's context ending.
var errCallTimeout = errors.New("the call timed out")

// transportError is the error of a call that failed in ctx without an answer from core: the
// caller's cancellation or deadline as it is (ctxErr); the client's own timeout as an Error
// DEADLINE_EXCEEDED, the same over REST and gRPC; else UNAVAILABLE.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return unreachable(c.base.Host, err)
	}
	if errors.Is(context.Cause(ctx), errCallTimeout) {
		where := c.base.Host
		if c.grpc != "" {
			where = c.grpc
		}
		return &Error{Code: "DEADLINE_EXCEEDED", Message: fmt.Sprintf("core at %s did not answer within %s (the client's timeout)", where, c.timeout), err: err}
	}
	return ctxErr(ctx)
}

// do sends one REST request and returns the open answer.
func (c *Client) do(ctx context.Context, verb, path string, query url.Values, hdr map[string]string, body io.Reader) (*http.Response, error) {
	u := *c.base
	u.RawPath = strings.TrimSuffix(c.base.EscapedPath(), "/") + path
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, verb, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", verb, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.agent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode/100 == 3 {
		resp.Body.Close()
		where := resp.Header.Get("Location")
		if l, err := url.Parse(where); err == nil && l.User != nil {
			where = l.Redacted()
		}
		if where == "" {
			where = "(no Location)"
		}
		return nil, fmt.Errorf("%w: %s %s answered %d %s to %s; give the client core's own address", ErrRedirect,
			verb, u.Redacted(), resp.StatusCode, http.StatusText(resp.StatusCode), where)
	}
	return resp, nil
}

// ctxErr returns the context's error when it ended, so that a cancelled call reports the
// cancellation rather than a network failure.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// esc escapes one path parameter.
func esc(s string) string { return url.PathEscape(s) }
