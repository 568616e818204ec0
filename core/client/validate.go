package client

import (
	"fmt"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The checks here refuse, before anything is sent, input that core would refuse anyway, so that
// the answer is the same INVALID_ARGUMENT over REST and gRPC: over REST an id becomes part of the
// path ("a/b" would name another resource, or none), and text that is not UTF-8 can be encoded
// neither as JSON nor as protobuf.

// checkIDs returns INVALID_ARGUMENT naming the first id that is empty or not a UUID in its
// canonical form (123e4567-e89b-12d3-a456-426614174000), the only form core takes.
func checkIDs(ids ...pathID) error {
	for _, id := range ids {
		if id.value == "" {
			return invalidInput("%s: required", id.field)
		}
		if _, err := uuid.Parse(id.value); err != nil || len(id.value) != 36 {
			return invalidInput("%s: want a UUID such as 123e4567-e89b-12d3-a456-426614174000", id.field)
		}
	}
	return nil
}

// checkUTF8 returns INVALID_ARGUMENT naming the first text field of m (prefix names m itself, for
// a nested message) that is not UTF-8; never its value, which may be secret.
func checkUTF8(m protoreflect.Message, prefix string) error {
	var bad error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + fd.JSONName()
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && bad == nil; i++ {
				bad = checkUTF8Value(fd, l.Get(i), fmt.Sprintf("%s[%d]", name, i))
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if s, ok := k.Interface().(string); ok && !utf8.ValidString(s) {
					bad = invalidInput("%s: a key is not UTF-8 text", name)
				} else {
					bad = checkUTF8Value(fd.MapValue(), mv, name+"["+k.String()+"]")
				}
				return bad == nil
			})
		default:
			bad = checkUTF8Value(fd, v, name)
		}
		return bad == nil
	})
	return bad
}

func checkUTF8Value(fd protoreflect.FieldDescriptor, v protoreflect.Value, name string) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(v.String()) {
			return invalidInput("%s: not UTF-8 text", name)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkUTF8(v.Message(), name+".")
	}
	return nil
}
