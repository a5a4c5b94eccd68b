package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// FieldError is one problem with one document, located precisely enough to
// fix it: "routes.yaml:14: VirtualService default/reviews: spec.http[0]: msg".
type FieldError struct {
	Source Source // file and line of the offending field (or document)
	Kind   string
	Name   string // namespace/name, when known
	Path   string // field path, e.g. spec.http[0].route[1].weight
	Msg    string
	// Warning marks a problem that does not stop the resource from being stored.
	Warning bool
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if s := e.Source.String(); s != "" {
		b.WriteString(s)
		b.WriteString(": ")
	}
	if e.Warning {
		b.WriteString("warning: ")
	}
	if e.Kind != "" {
		b.WriteString(e.Kind)
		if e.Name != "" {
			b.WriteString(" " + e.Name)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in an input; it is an error when non-empty.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Errors returns only the entries that are not warnings.
func (l ErrorList) Errors() ErrorList {
	var out ErrorList
	for _, e := range l {
		if !e.Warning {
			out = append(out, e)
		}
	}
	return out
}

// Warnings returns only the entries that are warnings.
func (l ErrorList) Warnings() ErrorList {
	var out ErrorList
	for _, e := range l {
		if e.Warning {
			out = append(out, e)
		}
	}
	return out
}

// AsErrorList extracts an ErrorList from err, if it holds one.
func AsErrorList(err error) (ErrorList, bool) {
	var l ErrorList
	ok := errors.As(err, &l)
	return l, ok
}

// Decode parses a multi-document YAML or JSON stream (also `kind: List`) into
// resources. Every field is checked against the kind's protobuf schema, so
// unknown fields and wrong types are reported with the line of the field and
// its path. It returns every problem found as an ErrorList; on any error no
// resources are returned, so callers never half-apply a file. Documents of
// other APIs (a Kubernetes Namespace or Deployment) are skipped; DecodeAll
// reports them as warnings.
func Decode(file string, data []byte) ([]*Resource, error) {
	rs, errs := DecodeAll(file, data)
	if len(errs.Errors()) > 0 {
		return nil, errs
	}
	return rs, nil
}

// DecodeAll is Decode that also returns warnings (skipped documents). If the
// list holds any error, no resources are returned.
func DecodeAll(file string, data []byte) ([]*Resource, ErrorList) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*Resource
	var errs ErrorList
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &FieldError{Source: Source{File: file, Line: yamlErrLine(err)}, Msg: "invalid YAML: " + err.Error()})
			break
		}
		if len(doc.Content) == 0 {
			continue
		}
		rs, derrs := decodeNode(file, doc.Content[0], 0)
		out = append(out, rs...)
		errs = append(errs, derrs...)
	}
	if len(errs.Errors()) > 0 {
		return nil, errs
	}
	return out, errs
}

// yamlErrLine extracts "line N" from a yaml.v3 syntax error, or 0.
func yamlErrLine(err error) int {
	var n int
	msg := err.Error()
	if i := strings.Index(msg, "line "); i >= 0 {
		_, _ = fmt.Sscanf(msg[i:], "line %d", &n)
	}
	return n
}

func decodeNode(file string, n *yaml.Node, depth int) ([]*Resource, ErrorList) {
	n = deref(n)
	src := Source{File: file, Line: n.Line}
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, ErrorList{{Source: src, Msg: "document is not a mapping (expected apiVersion, kind, metadata, spec)"}}
	}
	if k := mapValue(n, "kind"); k != nil && k.Value == "List" && depth == 0 {
		items := deref(mapValue(n, "items"))
		if items == nil || items.Kind != yaml.SequenceNode {
			return nil, ErrorList{{Source: src, Kind: "List", Path: "items", Msg: "a List needs an items sequence"}}
		}
		var out []*Resource
		var errs ErrorList
		for _, it := range items.Content {
			rs, e := decodeNode(file, it, depth+1)
			out = append(out, rs...)
			errs = append(errs, e...)
		}
		return out, errs
	}
	r, errs := decodeResource(file, n)
	if r == nil {
		return nil, errs
	}
	return []*Resource{r}, errs
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return deref(n.Content[0])
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

var topLevelFields = []string{"apiVersion", "kind", "metadata", "spec", "status"}

// decodeResource decodes one object; it reports every problem it can find
// (a wrong apiVersion does not hide unknown spec fields).
func decodeResource(file string, n *yaml.Node) (*Resource, ErrorList) {
	w := &walker{file: file, docLine: n.Line, lines: map[string]int{}}
	var apiVersion, kind string
	var metaNode, specNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		w.lines[k.Value] = k.Line
		switch k.Value {
		case "apiVersion":
			apiVersion = w.str("apiVersion", v)
		case "kind":
			kind = w.str("kind", v)
		case "metadata":
			metaNode = v
		case "spec":
			specNode = v
		case "status":
			// Written by controllers; ignored on input.
		default:
			w.unknown(k.Value, k, topLevelFields, "")
		}
	}
	if kind == "" {
		w.errorf(n.Line, "kind", "missing kind")
		return nil, w.errs
	}
	group, version, _ := strings.Cut(apiVersion, "/")
	s, ok := SchemaFor(group, kind)
	ours := ok && s.Group == group
	if !ours && group == GroupGatewayAPI {
		return nil, ErrorList{{Source: Source{File: file, Line: n.Line}, Kind: kind, Path: "kind",
			Msg: fmt.Sprintf("skipped: Gateway API kind %s is not supported by weft (supported: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, ReferenceGrant)", kind), Warning: true}}
	}
	if !ok && isKubernetesKind(apiVersion, kind) || ok && !ours && isKubernetesGroup(apiVersion) {
		return nil, ErrorList{{Source: Source{File: file, Line: n.Line}, Kind: kind, Path: "apiVersion",
			Msg: fmt.Sprintf("skipped: %s (%s) is not an Istio resource", kind, apiVersion), Warning: true}}
	}
	if !ok {
		names := make([]string, len(schemas))
		for i := range schemas {
			names[i] = schemas[i].WireKind()
		}
		msg := fmt.Sprintf("unknown kind %q", kind)
		if sug := suggest(kind, names); sug != "" {
			msg += fmt.Sprintf("; did you mean %q?", sug)
		}
		w.errorf(w.lines["kind"], "kind", "%s", msg)
		return nil, w.errs
	}
	w.kind = s.DisplayKind()
	if apiVersion == "" {
		w.errorf(n.Line, "apiVersion", "missing apiVersion; %s is served at %s", kind, strings.Join(s.APIVersions(), ", "))
	} else if group != s.Group || !s.ServesVersion(version) {
		w.errorf(w.lines["apiVersion"], "apiVersion", "%s is not served at %q; %s is served at %s",
			kind, apiVersion, kind, strings.Join(s.APIVersions(), ", "))
	}
	r := &Resource{APIVersion: apiVersion, Kind: s.Kind}
	w.meta(metaNode, n.Line, &r.Meta)
	if r.Meta.Name != "" {
		w.name = r.Meta.Namespace + "/" + r.Meta.Name
		for _, e := range w.errs {
			if e.Name == "" {
				e.Name = w.name
			}
		}
	}
	r.Spec = s.NewSpec()
	if specNode != nil && !isNull(specNode) {
		nerr := len(w.errs)
		js := w.message("spec", specNode, r.Spec.ProtoReflect().Descriptor())
		if len(w.errs) == nerr {
			b, err := json.Marshal(js)
			if err == nil {
				err = protojson.Unmarshal(b, r.Spec)
			}
			if err != nil {
				w.errorf(w.lines["spec"], "spec", "%v", err)
			}
		}
	}
	if len(w.errs) > 0 {
		return nil, w.errs
	}
	r.Source = Source{File: file, Line: n.Line, Lines: &LineIndex{lines: w.lines}}
	return r, nil
}

// isKubernetesGroup reports whether apiVersion belongs to a Kubernetes API
// group (apps/v1, networking.k8s.io/v1, gateway.networking.k8s.io/v1, ...).
func isKubernetesGroup(apiVersion string) bool {
	group, _, ok := strings.Cut(apiVersion, "/")
	if !ok {
		return false
	}
	switch group {
	case "apps", "batch", "policy", "autoscaling":
		return true
	}
	return strings.HasSuffix(group, ".k8s.io")
}

var coreKinds = map[string]bool{
	"Namespace": true, "Service": true, "ServiceAccount": true, "ConfigMap": true, "Secret": true,
	"Pod": true, "Endpoints": true, "PersistentVolumeClaim": true, "PersistentVolume": true,
	"LimitRange": true, "ResourceQuota": true, "ReplicationController": true,
}

// isKubernetesKind reports whether a document is a Kubernetes object weft
// does not manage (skipped with a warning rather than rejected).
func isKubernetesKind(apiVersion, kind string) bool {
	if isKubernetesGroup(apiVersion) {
		return true
	}
	return apiVersion == "v1" && coreKinds[kind]
}

// meta decodes metadata, checking names and types.
func (w *walker) meta(n *yaml.Node, docLine int, m *Meta) {
	if n == nil || isNull(n) {
		w.errorf(docLine, "metadata.name", "name is required")
		return
	}
	if n.Kind != yaml.MappingNode {
		w.errorf(n.Line, "metadata", "expected an object, got %s", describe(n))
		return
	}
	known := []string{"name", "namespace", "labels", "annotations", "resourceVersion", "generation", "creationTimestamp"}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		p := "metadata." + k.Value
		w.lines[p] = k.Line
		switch k.Value {
		case "name":
			m.Name = w.str(p, v)
		case "namespace":
			m.Namespace = w.str(p, v)
		case "labels":
			m.Labels = w.strMap(p, v)
		case "annotations":
			m.Annotations = w.strMap(p, v)
		case "resourceVersion":
			m.ResourceVersion = w.str(p, v)
		case "generation":
			if !isNull(v) {
				var g int64
				if err := v.Decode(&g); err != nil || v.Tag != "!!int" {
					w.errorf(v.Line, p, "expected an integer, got %s", describe(v))
				}
				m.Generation = g
			}
		case "creationTimestamp":
			if s := w.str(p, v); s != "" {
				t, err := time.Parse(time.RFC3339, s)
				if err != nil {
					w.errorf(v.Line, p, "expected an RFC 3339 time: %v", err)
				}
				m.CreationTimestamp = t
			}
		case "uid", "selfLink", "managedFields", "ownerReferences", "finalizers", "generateName", "deletionTimestamp", "deletionGracePeriodSeconds":
			// Kubernetes bookkeeping that `kubectl get -o yaml` prints; ignored.
		default:
			w.unknown(p, k, known, "")
		}
	}
	switch {
	case m.Name == "":
		w.errorf(w.lines["metadata"], "metadata.name", "name is required")
	case !IsDNS1123Subdomain(m.Name):
		w.errorf(w.lines["metadata.name"], "metadata.name", "invalid name %q: must be lower-case letters, digits, '-' or '.', start and end with a letter or digit, at most 253 characters (DNS-1123 subdomain)", m.Name)
	}
	if m.Namespace == "" {
		m.Namespace = DefaultNamespace
	} else if !IsDNS1123Label(m.Namespace) {
		w.errorf(w.lines["metadata.namespace"], "metadata.namespace", "invalid namespace %q: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)", m.Namespace)
	}
}

// IsDNS1123Label reports whether s is a DNS-1123 label (RFC 1123, lower case).
func IsDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// IsDNS1123Subdomain reports whether s is dot-separated DNS-1123 labels of at
// most 253 characters in total.
func IsDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !IsDNS1123Label(l) {
			return false
		}
	}
	return true
}

// object is the Kubernetes wire shape of a resource.
type object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   Meta            `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// MarshalJSON renders the resource in Kubernetes shape
// ({apiVersion, kind, metadata, spec}) with the spec in protojson form.
// A zero creationTimestamp is omitted.
func (r *Resource) MarshalJSON() ([]byte, error) {
	spec := []byte("{}")
	if r.Spec != nil {
		var err error
		spec, err = protojson.Marshal(r.Spec)
		if err != nil {
			return nil, fmt.Errorf("marshal %s spec: %w", r.Kind, err)
		}
	}
	kind := r.Kind
	if s, ok := SchemaForKind(r.Kind); ok {
		kind = s.WireKind()
	}
	return json.Marshal(object{APIVersion: r.APIVersion, Kind: kind, Metadata: r.Meta, Spec: spec})
}

// UnmarshalJSON parses the Kubernetes shape written by MarshalJSON.
func (r *Resource) UnmarshalJSON(b []byte) error {
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("decode resource: %w", err)
	}
	n2 := deref(&n)
	if n2 == nil || n2.Kind != yaml.MappingNode {
		return fmt.Errorf("decode resource: not a JSON object")
	}
	res, errs := decodeResource("", n2)
	if len(errs) > 0 {
		return errs
	}
	if res == nil {
		return fmt.Errorf("decode resource: not an Istio resource")
	}
	res.Source = Source{}
	*r = *res
	return nil
}

// EncodeYAML renders resources as a multi-document YAML stream.
func EncodeYAML(rs []*Resource) ([]byte, error) {
	var buf bytes.Buffer
	for i, r := range rs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		j, err := r.MarshalJSON()
		if err != nil {
			return nil, err
		}
		var v yaml.Node
		if err := yaml.Unmarshal(j, &v); err != nil {
			return nil, fmt.Errorf("encode %s: %w", r.Key(), err)
		}
		clearStyle(&v)
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(&v); err != nil {
			return nil, fmt.Errorf("encode %s: %w", r.Key(), err)
		}
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("encode %s: %w", r.Key(), err)
		}
	}
	return buf.Bytes(), nil
}

// clearStyle turns JSON flow style into block style for readable YAML.
func clearStyle(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style = 0
	}
	if n.Kind == yaml.ScalarNode && n.Style == yaml.DoubleQuotedStyle {
		n.Style = 0
	}
	for _, c := range n.Content {
		clearStyle(c)
	}
}
