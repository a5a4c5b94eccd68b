package config

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

// DecodeMessage decodes one YAML (or JSON) document into msg with the same
// checks as a resource spec: unknown fields with did-you-mean, enum and
// scalar types, every error naming file, line and field path. kind names
// the document in errors (e.g. "MeshConfig"). An empty document leaves msg
// unchanged.
func DecodeMessage(file, kind string, data []byte, msg proto.Message) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return ErrorList{{Source: Source{File: file, Line: yamlErrLine(err)}, Kind: kind, Msg: err.Error()}}
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil
	}
	n := doc.Content[0]
	w := &walker{file: file, docLine: n.Line, kind: kind, lines: map[string]int{}}
	js := w.message("", n, msg.ProtoReflect().Descriptor())
	if len(w.errs) > 0 {
		return w.errs
	}
	b, err := json.Marshal(js)
	if err == nil {
		err = protojson.Unmarshal(b, msg)
	}
	if err != nil {
		return fmt.Errorf("%s: %s: %w", file, kind, err)
	}
	return nil
}
