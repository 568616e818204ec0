package server

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// queryRoute is a gateway route: the gRPC method, and the HTTP verb and path template of its
// google.api.http binding.
type queryRoute struct{ method, verb, pattern string }

// queryRule is what a route takes in its query string: the fields of the request message that
// neither the path nor the body binds, named as the gateway names them.
type queryRule struct {
	known bool                           // the route's binding was found; otherwise anything passes
	msg   protoreflect.MessageDescriptor // the request message; nil when the body binds every field
	bound []string                       // field paths (proto names) the path and the body bind
}

// checkQuery returns the first (in sorted order) query parameter of r that its route does not
// take, or "" when there is none. ctx is the gateway's, which names the route. A route the
// descriptors do not describe (a hand-written one) takes anything, as the gateway would.
//
// The gateway itself ignores a parameter that names no field, and every parameter of a route
// whose body is "*": a caller who misspelt one would get an answer computed without it.
func (s *Server) checkQuery(ctx context.Context, r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	method, _ := runtime.RPCMethod(ctx)
	pattern, _ := runtime.HTTPPathPattern(ctx)
	route := queryRoute{method: method, verb: r.Method, pattern: pattern}
	v, ok := s.queries.Load(route)
	if !ok {
		v, _ = s.queries.LoadOrStore(route, newQueryRule(route))
	}
	rule := v.(*queryRule)
	if !rule.known {
		return ""
	}
	query := r.URL.Query()
	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !rule.takes(k) {
			return printableASCII(k, 64)
		}
	}
	return ""
}

// newQueryRule reads route's binding from the method's google.api.http option.
func newQueryRule(route queryRoute) *queryRule {
	name := protoreflect.FullName(strings.ReplaceAll(strings.TrimPrefix(route.method, "/"), "/", "."))
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return &queryRule{}
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return &queryRule{}
	}
	rule, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule == nil {
		return &queryRule{}
	}
	for _, b := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
		verb, path := binding(b)
		if path != route.pattern || !strings.EqualFold(verb, route.verb) {
			continue
		}
		q := &queryRule{known: true}
		if b.GetBody() == "*" {
			return q
		}
		q.msg = md.Input()
		if b.GetBody() != "" {
			q.bound = append(q.bound, b.GetBody())
		}
		for _, m := range pathVariable.FindAllStringSubmatch(path, -1) {
			q.bound = append(q.bound, m[1])
		}
		return q
	}
	return &queryRule{}
}

// pathVariable matches a variable of a path template: {name} or {name=segments}.
var pathVariable = regexp.MustCompile(`\{([^}=]+)(?:=[^}]*)?\}`)

// binding returns the HTTP verb and path template of b.
func binding(b *annotations.HttpRule) (verb, path string) {
	switch p := b.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch
	case *annotations.HttpRule_Custom:
		return p.Custom.GetKind(), p.Custom.GetPath()
	}
	return "", ""
}

// mapKey matches a query key addressing a map entry, name[key].
var mapKey = regexp.MustCompile(`^(.*)\[(.*)\]$`)

// takes reports whether key names a field the query may set: a field of the request message by
// its proto or JSON name, or a dotted path through singular message fields, as the gateway reads
// it; and not one the path or the body binds (or one inside or around it).
func (q *queryRule) takes(key string) bool {
	if q.msg == nil {
		return false
	}
	if m := mapKey.FindStringSubmatch(key); m != nil {
		key = m[1]
	}
	parts := strings.Split(key, ".")
	names := make([]string, 0, len(parts))
	md := q.msg
	for i, p := range parts {
		fd := md.Fields().ByTextName(p)
		if fd == nil {
			fd = md.Fields().ByJSONName(p)
		}
		if fd == nil {
			return false
		}
		names = append(names, string(fd.Name()))
		if i == len(parts)-1 {
			break
		}
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return false
		}
		md = fd.Message()
	}
	path := strings.Join(names, ".")
	for _, b := range q.bound {
		if path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(b, path+".") {
			return false
		}
	}
	return true
}
