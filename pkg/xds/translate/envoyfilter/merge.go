package envoyfilter

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// decode converts a patch value (a Struct written in YAML or JSON, with
// snake_case or camelCase field names) into msg. Unknown fields and
// typed_config types weft does not know are errors.
func decode(v *structpb.Struct, msg proto.Message) error {
	if v == nil {
		return fmt.Errorf("patch.value is required")
	}
	b, err := protojson.Marshal(v)
	if err != nil {
		return fmt.Errorf("patch.value: %w", err)
	}
	if err := protojson.Unmarshal(b, msg); err != nil {
		return fmt.Errorf("patch.value as %s: %w", msg.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// merge merges src into dst the way Istio's EnvoyFilter MERGE does: proto
// merge semantics (set scalars overwrite, messages merge recursively,
// repeated fields append, map entries overwrite), except that
//   - an Any holding the same type as dst's Any is unpacked, merged and
//     repacked (so a typed_config patch changes fields of the filter's
//     config instead of replacing it), and an Any of another type replaces
//     dst's;
//   - well-known value types (Duration, Timestamp, wrappers, Struct, Value)
//     replace dst's value as a whole (merging 5s into 15.5s must give 5s);
//   - with replaceLists, a repeated field in src replaces dst's list
//     (MERGE_AND_REPLACE_LIST).
func merge(dst, src proto.Message, replaceLists bool) error {
	return mergeMsg(dst.ProtoReflect(), src.ProtoReflect(), replaceLists)
}

func mergeMsg(dst, src protoreflect.Message, replaceLists bool) error {
	if dst.Descriptor().FullName() != src.Descriptor().FullName() {
		return fmt.Errorf("cannot merge %s into %s", src.Descriptor().FullName(), dst.Descriptor().FullName())
	}
	var err error
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if replaceLists {
				dst.Clear(fd)
			}
			dl := dst.Mutable(fd).List()
			sl := v.List()
			for i := 0; i < sl.Len(); i++ {
				dl.Append(cloneValue(fd, sl.Get(i)))
			}
		case fd.IsMap():
			dm := dst.Mutable(fd).Map()
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				dm.Set(k, cloneValue(fd.MapValue(), mv))
				return true
			})
		case fd.Message() != nil:
			if !dst.Has(fd) || wholeValue(fd.Message().FullName()) {
				dst.Set(fd, cloneValue(fd, v))
				return true
			}
			if fd.Message().FullName() == "google.protobuf.Any" {
				if err = mergeAny(dst.Mutable(fd).Message(), v.Message(), replaceLists); err != nil {
					return false
				}
				return true
			}
			if err = mergeMsg(dst.Mutable(fd).Message(), v.Message(), replaceLists); err != nil {
				return false
			}
		default:
			dst.Set(fd, v)
		}
		return true
	})
	return err
}

func wholeValue(n protoreflect.FullName) bool {
	switch n {
	case "google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.Struct", "google.protobuf.Value",
		"google.protobuf.ListValue", "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
		"google.protobuf.Int32Value", "google.protobuf.Int64Value", "google.protobuf.UInt32Value", "google.protobuf.UInt64Value",
		"google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		return true
	}
	return false
}

// mergeAny merges two Anys: same type URL merges the unpacked messages,
// otherwise src replaces dst.
func mergeAny(dst, src protoreflect.Message, replaceLists bool) error {
	da, ok1 := dst.Interface().(*anypb.Any)
	sa, ok2 := src.Interface().(*anypb.Any)
	if !ok1 || !ok2 {
		return fmt.Errorf("unexpected Any implementation")
	}
	if da.GetTypeUrl() != sa.GetTypeUrl() {
		da.TypeUrl, da.Value = sa.GetTypeUrl(), append([]byte(nil), sa.GetValue()...)
		return nil
	}
	dm, err := da.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("typed_config %s: %w", da.GetTypeUrl(), err)
	}
	sm, err := sa.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("typed_config %s: %w", sa.GetTypeUrl(), err)
	}
	if err := merge(dm, sm, replaceLists); err != nil {
		return err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(dm)
	if err != nil {
		return err
	}
	da.Value = b
	return nil
}

func cloneValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	if fd.Message() != nil {
		return protoreflect.ValueOfMessage(proto.Clone(v.Message().Interface()).ProtoReflect())
	}
	if fd.Kind() == protoreflect.BytesKind {
		return protoreflect.ValueOfBytes(append([]byte(nil), v.Bytes()...))
	}
	return v
}

// validateDeep runs Validate() on msg and on every message packed in an Any
// inside it (typed_config of filters, transport sockets, ...), which a
// resource's own Validate does not look into. seen (may be nil) remembers
// the Anys already found valid, by type and bytes: generated resources
// repeat the same few (retry predicates, per-route filter configs).
func validateDeep(msg proto.Message, seen map[string]bool) error {
	if v, ok := msg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return walkAnys(msg.ProtoReflect(), func(a *anypb.Any) error {
		key := a.GetTypeUrl() + "\x00" + string(a.GetValue())
		if seen[key] {
			return nil
		}
		if _, err := protoregistry.GlobalTypes.FindMessageByURL(a.GetTypeUrl()); err != nil {
			return nil // unknown types are reported by the executability check
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
		}
		if err := validateDeep(m, seen); err != nil {
			return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
		}
		if seen != nil {
			seen[key] = true
		}
		return nil
	})
}

// walkAnys calls f for every Any directly reachable in m (not inside other
// Anys).
func walkAnys(m protoreflect.Message, f func(*anypb.Any) error) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		visit := func(mv protoreflect.Message) bool {
			if a, ok := mv.Interface().(*anypb.Any); ok {
				err = f(a)
			} else {
				err = walkAnys(mv, f)
			}
			return err == nil
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if !visit(l.Get(i).Message()) {
					return false
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { return visit(mv.Message()) })
			return err == nil
		default:
			return visit(v.Message())
		}
		return true
	})
	return err
}
