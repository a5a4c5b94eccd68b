// Package gatewayapi models the Kubernetes Gateway API kinds weft accepts
// (gateway.networking.k8s.io GatewayClass, Gateway, HTTPRoute; v1 and
// v1beta1; GRPCRoute v1; TLSRoute v1, v1alpha3 and v1alpha2; TCPRoute
// v1alpha2; ReferenceGrant v1beta1) for pkg/config. istio.io/api has no messages for them, so this
// package declares a trimmed protobuf schema of their specs at run time
// (proto2, so optional fields keep presence: `group: ""` differs from an
// unset group) and the specs are dynamicpb messages: pkg/config decodes,
// checks unknown fields and stores them like every Istio kind. Spec converts
// a decoded spec into the plain Go structs in types.go for validation and
// translation.
//
// The schema covers the standard channel fields of HTTPRoute and Gateway
// that weft reads or rejects explicitly; other fields (experimental ones
// such as HTTPRoute retry, sessionPersistence, cors) are unknown fields and
// decoding names them.
package gatewayapi

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Group is the Gateway API group.
const Group = "gateway.networking.k8s.io"

const pkgName = "weft.gatewayapi.v1"

type fieldKind int

const (
	kString fieldKind = iota
	kInt32
	kMessage
	kStringMap
)

type fieldSpec struct {
	name     string
	kind     fieldKind
	repeated bool
	msg      string // message type name for kMessage
}

func str(name string) fieldSpec      { return fieldSpec{name: name, kind: kString} }
func strs(name string) fieldSpec     { return fieldSpec{name: name, kind: kString, repeated: true} }
func i32(name string) fieldSpec      { return fieldSpec{name: name, kind: kInt32} }
func msg(name, typ string) fieldSpec { return fieldSpec{name: name, kind: kMessage, msg: typ} }
func msgs(name, typ string) fieldSpec {
	return fieldSpec{name: name, kind: kMessage, msg: typ, repeated: true}
}
func strMap(name string) fieldSpec                     { return fieldSpec{name: name, kind: kStringMap} }
func message(name string, fs ...fieldSpec) messageSpec { return messageSpec{name: name, fields: fs} }

type messageSpec struct {
	name   string
	fields []fieldSpec
}

// messages is the trimmed schema; field names are the Gateway API's JSON
// names.
var messages = []messageSpec{
	message("GatewayClassSpec", str("controllerName"), str("description"), msg("parametersRef", "ParametersReference")),
	message("ParametersReference", str("group"), str("kind"), str("name"), str("namespace")),

	message("GatewaySpec", str("gatewayClassName"), msgs("listeners", "Listener"), msgs("addresses", "GatewayAddress"), msg("infrastructure", "GatewayInfrastructure")),
	message("GatewayAddress", str("type"), str("value")),
	message("GatewayInfrastructure", strMap("labels"), strMap("annotations"), msg("parametersRef", "LocalParametersReference")),
	message("LocalParametersReference", str("group"), str("kind"), str("name")),
	message("Listener", str("name"), str("hostname"), i32("port"), str("protocol"), msg("tls", "GatewayTLSConfig"), msg("allowedRoutes", "AllowedRoutes")),
	message("GatewayTLSConfig", str("mode"), msgs("certificateRefs", "SecretObjectReference"), strMap("options")),
	message("SecretObjectReference", str("group"), str("kind"), str("name"), str("namespace")),
	message("AllowedRoutes", msg("namespaces", "RouteNamespaces"), msgs("kinds", "RouteGroupKind")),
	message("RouteNamespaces", str("from"), msg("selector", "LabelSelector")),
	message("LabelSelector", strMap("matchLabels"), msgs("matchExpressions", "LabelSelectorRequirement")),
	message("LabelSelectorRequirement", str("key"), str("operator"), strs("values")),
	message("RouteGroupKind", str("group"), str("kind")),

	message("HTTPRouteSpec", msgs("parentRefs", "ParentReference"), strs("hostnames"), msgs("rules", "HTTPRouteRule")),
	message("ParentReference", str("group"), str("kind"), str("namespace"), str("name"), str("sectionName"), i32("port")),
	message("HTTPRouteRule", str("name"), msgs("matches", "HTTPRouteMatch"), msgs("filters", "HTTPRouteFilter"), msgs("backendRefs", "HTTPBackendRef"), msg("timeouts", "HTTPRouteTimeouts")),
	message("HTTPRouteMatch", msg("path", "HTTPPathMatch"), msgs("headers", "HTTPHeaderMatch"), msgs("queryParams", "HTTPQueryParamMatch"), str("method")),
	message("HTTPPathMatch", str("type"), str("value")),
	message("HTTPHeaderMatch", str("type"), str("name"), str("value")),
	message("HTTPQueryParamMatch", str("type"), str("name"), str("value")),
	message("HTTPRouteFilter", str("type"), msg("requestHeaderModifier", "HTTPHeaderFilter"), msg("responseHeaderModifier", "HTTPHeaderFilter"),
		msg("requestMirror", "HTTPRequestMirrorFilter"), msg("requestRedirect", "HTTPRequestRedirectFilter"), msg("urlRewrite", "HTTPURLRewriteFilter"), msg("extensionRef", "LocalObjectReference")),
	message("HTTPHeaderFilter", msgs("set", "HTTPHeader"), msgs("add", "HTTPHeader"), strs("remove")),
	message("HTTPHeader", str("name"), str("value")),
	message("HTTPRequestMirrorFilter", msg("backendRef", "BackendObjectReference"), i32("percent"), msg("fraction", "Fraction")),
	message("Fraction", i32("numerator"), i32("denominator")),
	message("BackendObjectReference", str("group"), str("kind"), str("name"), str("namespace"), i32("port")),
	message("HTTPRequestRedirectFilter", str("scheme"), str("hostname"), msg("path", "HTTPPathModifier"), i32("port"), i32("statusCode")),
	message("HTTPURLRewriteFilter", str("hostname"), msg("path", "HTTPPathModifier")),
	message("HTTPPathModifier", str("type"), str("replaceFullPath"), str("replacePrefixMatch")),
	message("LocalObjectReference", str("group"), str("kind"), str("name")),
	message("HTTPBackendRef", str("group"), str("kind"), str("name"), str("namespace"), i32("port"), i32("weight"), msgs("filters", "HTTPRouteFilter")),
	message("HTTPRouteTimeouts", str("request"), str("backendRequest")),

	message("GRPCRouteSpec", msgs("parentRefs", "ParentReference"), strs("hostnames"), msgs("rules", "GRPCRouteRule")),
	message("GRPCRouteRule", str("name"), msgs("matches", "GRPCRouteMatch"), msgs("filters", "HTTPRouteFilter"), msgs("backendRefs", "HTTPBackendRef")),
	message("GRPCRouteMatch", msg("method", "GRPCMethodMatch"), msgs("headers", "HTTPHeaderMatch")),
	message("GRPCMethodMatch", str("type"), str("service"), str("method")),

	message("TLSRouteSpec", msgs("parentRefs", "ParentReference"), strs("hostnames"), msgs("rules", "L4RouteRule")),
	message("TCPRouteSpec", msgs("parentRefs", "ParentReference"), msgs("rules", "L4RouteRule")),
	message("L4RouteRule", str("name"), msgs("backendRefs", "BackendRef")),
	message("BackendRef", str("group"), str("kind"), str("name"), str("namespace"), i32("port"), i32("weight")),

	message("ReferenceGrantSpec", msgs("from", "ReferenceGrantFrom"), msgs("to", "ReferenceGrantTo")),
	message("ReferenceGrantFrom", str("group"), str("kind"), str("namespace")),
	message("ReferenceGrantTo", str("group"), str("kind"), str("name")),
}

// file is the resolved schema, built once at package initialisation and
// read-only afterwards.
var file = mustBuild()

func mustBuild() protoreflect.FileDescriptor {
	fd, err := build()
	if err != nil {
		panic(fmt.Sprintf("gatewayapi: build descriptor: %v", err))
	}
	return fd
}

func build() (protoreflect.FileDescriptor, error) {
	fp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("weft/gatewayapi/v1/gatewayapi.proto"),
		Package: proto.String(pkgName),
		Syntax:  proto.String("proto2"),
	}
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	repeated := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	for _, m := range messages {
		mp := &descriptorpb.DescriptorProto{Name: proto.String(m.name)}
		for i, f := range m.fields {
			fdp := &descriptorpb.FieldDescriptorProto{
				Name:     proto.String(f.name),
				JsonName: proto.String(f.name),
				Number:   proto.Int32(int32(i + 1)),
				Label:    optional,
			}
			if f.repeated {
				fdp.Label = repeated
			}
			switch f.kind {
			case kString:
				fdp.Type = descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
			case kInt32:
				fdp.Type = descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum()
			case kMessage:
				fdp.Type = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
				fdp.TypeName = proto.String("." + pkgName + "." + f.msg)
			case kStringMap:
				entry := mapEntryName(f.name)
				mp.NestedType = append(mp.NestedType, &descriptorpb.DescriptorProto{
					Name: proto.String(entry),
					Field: []*descriptorpb.FieldDescriptorProto{
						{Name: proto.String("key"), JsonName: proto.String("key"), Number: proto.Int32(1), Label: optional, Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()},
						{Name: proto.String("value"), JsonName: proto.String("value"), Number: proto.Int32(2), Label: optional, Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()},
					},
					Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				})
				fdp.Label = repeated
				fdp.Type = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
				fdp.TypeName = proto.String("." + pkgName + "." + m.name + "." + entry)
			}
			mp.Field = append(mp.Field, fdp)
		}
		fp.MessageType = append(fp.MessageType, mp)
	}
	return protodesc.NewFile(fp, nil)
}

// mapEntryName is protoc's name for the entry message of map field name.
func mapEntryName(name string) string {
	return string(name[0]-'a'+'A') + name[1:] + "Entry"
}

func newSpec(name string) proto.Message {
	return dynamicpb.NewMessage(file.Messages().ByName(protoreflect.Name(name)))
}

// NewGatewayClassSpec returns an empty GatewayClass spec.
func NewGatewayClassSpec() proto.Message { return newSpec("GatewayClassSpec") }

// NewGatewaySpec returns an empty Gateway spec.
func NewGatewaySpec() proto.Message { return newSpec("GatewaySpec") }

// NewHTTPRouteSpec returns an empty HTTPRoute spec.
func NewHTTPRouteSpec() proto.Message { return newSpec("HTTPRouteSpec") }

// NewGRPCRouteSpec returns an empty GRPCRoute spec.
func NewGRPCRouteSpec() proto.Message { return newSpec("GRPCRouteSpec") }

// NewTLSRouteSpec returns an empty TLSRoute spec.
func NewTLSRouteSpec() proto.Message { return newSpec("TLSRouteSpec") }

// NewTCPRouteSpec returns an empty TCPRoute spec.
func NewTCPRouteSpec() proto.Message { return newSpec("TCPRouteSpec") }

// NewReferenceGrantSpec returns an empty ReferenceGrant spec.
func NewReferenceGrantSpec() proto.Message { return newSpec("ReferenceGrantSpec") }
