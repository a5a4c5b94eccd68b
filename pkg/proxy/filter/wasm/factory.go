package wasm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// Filters returns the wasm filter factory keyed by FilterName (merge into
// proxy.Options.HTTPFilters).
func (e *Engine) Filters() map[string]listener.FilterFactory {
	return map[string]listener.FilterFactory{FilterName: e.Factory()}
}

// Factory builds a Plugin from an envoy.extensions.filters.http.wasm.v3.Wasm
// typed config: vm_config.code local (filename, inline_bytes,
// inline_string) or remote (http_uri.uri + sha256); configuration as
// StringValue/BytesValue (other types: their serialized bytes); fail_open or
// failure_policy FAIL_OPEN.
func (e *Engine) Factory() listener.FilterFactory {
	return func(tc *anypb.Any) (listener.HTTPFilter, error) {
		var w wasmhttpv3.Wasm
		if err := tc.UnmarshalTo(&w); err != nil {
			return nil, fmt.Errorf("wasm: typed_config: %w", err)
		}
		return e.PluginFromConfig(context.Background(), w.GetConfig())
	}
}

// PluginFromConfig loads and starts the plugin described by pc.
func (e *Engine) PluginFromConfig(ctx context.Context, pc *wasmv3.PluginConfig) (*Plugin, error) {
	vm := pc.GetVmConfig()
	if vm == nil {
		return nil, errors.New("wasm: config.vm_config is required")
	}
	code, err := e.loadCode(ctx, vm)
	if err != nil {
		return nil, err
	}
	cfg := PluginConfig{
		Name: pc.GetName(), RootID: pc.GetRootId(),
		FailOpen: pc.GetFailOpen() || pc.GetFailurePolicy() == wasmv3.FailurePolicy_FAIL_OPEN,
	}
	if cfg.Configuration, err = anyBytes(pc.GetConfiguration()); err != nil {
		return nil, err
	}
	if cfg.VMConfiguration, err = anyBytes(vm.GetConfiguration()); err != nil {
		return nil, err
	}
	return e.NewPlugin(ctx, code, cfg)
}

func (e *Engine) loadCode(ctx context.Context, vm *wasmv3.VmConfig) ([]byte, error) {
	code := vm.GetCode()
	if l := code.GetLocal(); l != nil {
		switch {
		case l.GetFilename() != "":
			b, err := os.ReadFile(l.GetFilename())
			if err != nil {
				return nil, fmt.Errorf("wasm: code: %w", err)
			}
			return b, nil
		case len(l.GetInlineBytes()) > 0:
			return l.GetInlineBytes(), nil
		case l.GetInlineString() != "":
			return []byte(l.GetInlineString()), nil
		}
		return nil, errors.New("wasm: vm_config.code.local is empty")
	}
	if r := code.GetRemote(); r != nil {
		if r.GetHttpUri().GetUri() == "" {
			return nil, errors.New("wasm: vm_config.code.remote.http_uri.uri is required")
		}
		if strings.HasPrefix(r.GetHttpUri().GetUri(), "oci://") { // oci.go
			return e.fetchOCI(ctx, r.GetHttpUri().GetUri(), r.GetSha256(), vm)
		}
		return e.fetch(ctx, r.GetHttpUri().GetUri(), r.GetSha256())
	}
	return nil, errors.New("wasm: vm_config.code is required")
}

func anyBytes(a *anypb.Any) ([]byte, error) {
	if a == nil {
		return nil, nil
	}
	msg, err := a.UnmarshalNew()
	if err != nil {
		return a.GetValue(), nil //nolint:nilerr // unknown types pass their bytes
	}
	switch v := msg.(type) {
	case *wrapperspb.StringValue:
		return []byte(v.GetValue()), nil
	case *wrapperspb.BytesValue:
		return v.GetValue(), nil
	}
	return a.GetValue(), nil
}
