package wasm

// Pulling wasm modules from OCI registries (WasmPlugin oci:// URLs) with
// the Distribution API v2 over net/http: anonymous bearer-token auth,
// manifest (or index) → layer, every digest verified. Both of Istio's image
// formats are understood: the OCI artifact whose layer has media type
// application/vnd.module.wasm.content.layer.v1+wasm (the blob is the
// module), and a Docker/OCI image with one tar(.gz) layer holding
// plugin.wasm.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
)

// VM environment variables the control plane sets on oci:// modules (the
// names Istio's agent reads).
const (
	// PullPolicyEnv is IfNotPresent (default; Always for an untagged or
	// :latest reference) or Always.
	PullPolicyEnv = "ISTIO_META_WASM_IMAGE_PULL_POLICY"
	// ResourceVersionEnv is the WasmPlugin's resource version: with
	// Always, each new version pulls again.
	ResourceVersionEnv = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"
)

// Media types.
const (
	WasmLayerMediaType = "application/vnd.module.wasm.content.layer.v1+wasm"
	ociManifest        = "application/vnd.oci.image.manifest.v1+json"
	ociIndex           = "application/vnd.oci.image.index.v1+json"
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerList         = "application/vnd.docker.distribution.manifest.list.v2+json"
	maxManifest        = 4 << 20
	maxModule          = 256 << 20
)

// OCIRef is a parsed oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST].
type OCIRef struct {
	Registry, Repository, Tag, Digest string
}

// ParseOCIRef parses an oci:// URL; the tag defaults to latest.
func ParseOCIRef(u string) (OCIRef, error) {
	rest, ok := strings.CutPrefix(u, "oci://")
	if !ok {
		return OCIRef{}, fmt.Errorf("wasm: %q is not an oci:// URL", u)
	}
	reg, repo, ok := strings.Cut(rest, "/")
	if !ok || reg == "" || repo == "" {
		return OCIRef{}, fmt.Errorf("wasm: %q: want oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]", u)
	}
	r := OCIRef{Registry: reg}
	if name, d, ok := strings.Cut(repo, "@"); ok {
		if !strings.HasPrefix(d, "sha256:") || len(d) != len("sha256:")+64 {
			return OCIRef{}, fmt.Errorf("wasm: %q: digest must be sha256:<64 hex digits>", u)
		}
		repo, r.Digest = name, d
	}
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo, r.Tag = repo[:i], repo[i+1:]
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	if r.Registry == "docker.io" {
		r.Registry = "registry-1.docker.io"
		if !strings.Contains(repo, "/") {
			repo = "library/" + repo
		}
	}
	r.Repository = repo
	return r, nil
}

func (r OCIRef) reference() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

// insecure reports whether the registry is spoken to over plain HTTP:
// loopback registries, as Docker does.
func (r OCIRef) insecure() bool {
	host := r.Registry
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// WithModuleCacheDir keeps modules pulled from OCI registries in dir, so
// that with IfNotPresent a restarted proxy does not pull them again ("":
// memory only).
func WithModuleCacheDir(dir string) Option { return func(e *Engine) { e.ociDir = dir } }

// ociDiskPath is where the module of uri is kept under the cache
// directory; the manifest's sha256 is kept beside it (.manifest).
func (e *Engine) ociDiskPath(uri string) string {
	h := sha256.Sum256([]byte(uri))
	return filepath.Join(e.ociDir, "oci", hex.EncodeToString(h[:])+".wasm")
}

// ociFromDisk returns the cached module of uri and its manifest sum.
func (e *Engine) ociFromDisk(uri string) ([]byte, string, bool) {
	if e.ociDir == "" {
		return nil, "", false
	}
	p := e.ociDiskPath(uri)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, "", false
	}
	m, err := os.ReadFile(strings.TrimSuffix(p, ".wasm") + ".manifest")
	if err != nil {
		return nil, "", false
	}
	return b, strings.TrimSpace(string(m)), true
}

// ociToDisk stores a pulled module (best effort: a failure is logged).
func (e *Engine) ociToDisk(uri string, b []byte, manifestSum string) {
	if e.ociDir == "" {
		return
	}
	p := e.ociDiskPath(uri)
	write := func(path string, data []byte) error {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, path)
	}
	err := os.MkdirAll(filepath.Dir(p), 0o700)
	if err == nil {
		err = write(p, b)
	}
	if err == nil {
		err = write(strings.TrimSuffix(p, ".wasm")+".manifest", []byte(manifestSum+"\n"))
	}
	if err != nil {
		e.log.Warn("wasm: cannot cache the pulled module", "url", uri, "dir", e.ociDir, "error", err)
	}
}

// fetchOCI returns the module of an oci:// URL, from the engine's cache
// (memory, then WithModuleCacheDir) when the pull policy allows. sum, when
// set, must be the sha256 of the image manifest (Istio's meaning) or of
// the module itself.
func (e *Engine) fetchOCI(ctx context.Context, uri, sum string, vm *wasmv3.VmConfig) ([]byte, error) {
	ref, err := ParseOCIRef(uri)
	if err != nil {
		return nil, err
	}
	env := vm.GetEnvironmentVariables().GetKeyValues()
	always := strings.EqualFold(env[PullPolicyEnv], "Always") ||
		(env[PullPolicyEnv] == "" && ref.Digest == "" && ref.Tag == "latest")
	key := "oci:" + uri + "@" + sum
	if always {
		key += "#" + env[ResourceVersionEnv]
	}
	e.mu.Lock()
	b, ok := e.remote[key]
	e.mu.Unlock()
	if ok {
		return b, nil
	}
	b, manifestSum, fromDisk := nil, "", false
	if !always {
		b, manifestSum, fromDisk = e.ociFromDisk(uri)
	}
	if !fromDisk {
		p := &ociPuller{client: e.client, ref: ref, scheme: "https"}
		if ref.insecure() {
			p.scheme = "http"
		}
		if b, manifestSum, err = p.pull(ctx); err != nil {
			return nil, fmt.Errorf("wasm: %s: %w", uri, err)
		}
	}
	if sum != "" {
		mod := sha256.Sum256(b)
		if want := strings.TrimPrefix(sum, "sha256:"); want != manifestSum && want != hex.EncodeToString(mod[:]) {
			return nil, fmt.Errorf("wasm: %s: sha256 mismatch: image manifest %s, module %x, want %s", uri, manifestSum, mod, want)
		}
	}
	if fromDisk {
		e.log.Info("wasm: module from the cache directory", "url", uri, "manifest", "sha256:"+manifestSum, "bytes", len(b))
	} else {
		e.log.Info("wasm: pulled module", "url", uri, "manifest", "sha256:"+manifestSum, "bytes", len(b), "always", always)
		e.ociToDisk(uri, b, manifestSum)
	}
	e.mu.Lock()
	e.remote[key] = b
	e.mu.Unlock()
	return b, nil
}

// ociPuller pulls one reference; it keeps the bearer token it obtained.
type ociPuller struct {
	client *http.Client
	ref    OCIRef
	scheme string
	token  string
}

type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type ociManifestDoc struct {
	MediaType string          `json:"mediaType"`
	Layers    []ociDescriptor `json:"layers"`
	Manifests []ociDescriptor `json:"manifests"`
}

// pull returns the module and the hex sha256 of the image manifest.
func (p *ociPuller) pull(ctx context.Context) ([]byte, string, error) {
	body, mt, err := p.manifest(ctx, p.ref.reference())
	if err != nil {
		return nil, "", err
	}
	var m ociManifestDoc
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "", fmt.Errorf("manifest: %w", err)
	}
	if mt == "" {
		mt = m.MediaType
	}
	if mt == ociIndex || mt == dockerList || (len(m.Manifests) > 0 && len(m.Layers) == 0) {
		d, err := pickManifest(m.Manifests)
		if err != nil {
			return nil, "", err
		}
		if body, _, err = p.manifest(ctx, d.Digest); err != nil {
			return nil, "", err
		}
		m = ociManifestDoc{}
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, "", fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
	}
	msum := sha256.Sum256(body)
	for _, l := range m.Layers {
		if l.MediaType == WasmLayerMediaType {
			b, err := p.blob(ctx, l)
			return b, hex.EncodeToString(msum[:]), err
		}
	}
	if len(m.Layers) != 1 {
		return nil, "", fmt.Errorf("image has %d layers and none of media type %s; want the wasm artifact layer or one layer with plugin.wasm", len(m.Layers), WasmLayerMediaType)
	}
	layer, err := p.blob(ctx, m.Layers[0])
	if err != nil {
		return nil, "", err
	}
	b, err := pluginFromLayer(layer)
	return b, hex.EncodeToString(msum[:]), err
}

// pickManifest chooses from an index the manifest for wasm (os wasip1 or
// wasi, or architecture wasm), else the only one.
func pickManifest(ds []ociDescriptor) (ociDescriptor, error) {
	for _, d := range ds {
		if d.Platform != nil && (d.Platform.Architecture == "wasm" || strings.HasPrefix(d.Platform.OS, "wasi")) {
			return d, nil
		}
	}
	if len(ds) == 1 {
		return ds[0], nil
	}
	return ociDescriptor{}, fmt.Errorf("image index has %d manifests and none for wasm", len(ds))
}

// manifest GETs a manifest by tag or digest; a digest reference is
// verified against the body.
func (p *ociPuller) manifest(ctx context.Context, ref string) ([]byte, string, error) {
	resp, err := p.get(ctx, "/v2/"+p.ref.Repository+"/manifests/"+ref, strings.Join([]string{ociManifest, dockerManifest, ociIndex, dockerList}, ", "))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest))
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", ref, err)
	}
	if d, ok := strings.CutPrefix(ref, "sha256:"); ok {
		if got := sha256.Sum256(body); hex.EncodeToString(got[:]) != d {
			return nil, "", fmt.Errorf("manifest %s: digest mismatch (got sha256:%x)", ref, got)
		}
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return body, strings.TrimSpace(mt), nil
}

// blob GETs a blob and verifies its digest.
func (p *ociPuller) blob(ctx context.Context, d ociDescriptor) ([]byte, error) {
	want, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok {
		return nil, fmt.Errorf("layer digest %q: only sha256 is supported", d.Digest)
	}
	if d.Size > maxModule {
		return nil, fmt.Errorf("layer %s: %d bytes is over the %d byte limit", d.Digest, d.Size, maxModule)
	}
	resp, err := p.get(ctx, "/v2/"+p.ref.Repository+"/blobs/"+d.Digest, "*/*")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxModule+1))
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
	}
	if len(b) > maxModule {
		return nil, fmt.Errorf("layer %s: over the %d byte limit", d.Digest, maxModule)
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != want {
		return nil, fmt.Errorf("layer %s: digest mismatch (got sha256:%x)", d.Digest, got)
	}
	return b, nil
}

// pluginFromLayer extracts plugin.wasm from a tar or tar.gz layer.
func pluginFromLayer(layer []byte) ([]byte, error) {
	var r io.Reader = bytes.NewReader(layer)
	if len(layer) > 2 && layer[0] == 0x1f && layer[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(bufio.NewReader(r))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("layer has no plugin.wasm")
		}
		if err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		if h.Typeflag == tar.TypeReg && path.Clean("/"+h.Name) == "/plugin.wasm" {
			b, err := io.ReadAll(io.LimitReader(tr, maxModule+1))
			if err != nil {
				return nil, fmt.Errorf("layer: plugin.wasm: %w", err)
			}
			if len(b) > maxModule {
				return nil, fmt.Errorf("layer: plugin.wasm is over the %d byte limit", maxModule)
			}
			return b, nil
		}
	}
}

// get sends a GET to the registry, answering a bearer challenge once with
// an anonymous token for pulling the repository.
func (p *ociPuller) get(ctx context.Context, pth, accept string) (*http.Response, error) {
	u := p.scheme + "://" + p.ref.Registry + pth
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", accept)
		if p.token != "" {
			req.Header.Set("Authorization", "Bearer "+p.token)
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			return resp, nil
		case resp.StatusCode == http.StatusUnauthorized && attempt == 0:
			ch := resp.Header.Get("WWW-Authenticate")
			resp.Body.Close()
			if err := p.authenticate(ctx, ch); err != nil {
				return nil, fmt.Errorf("GET %s: %w", pth, err)
			}
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", pth, resp.Status, strings.TrimSpace(string(b)))
	}
}

// authenticate gets a pull token from the realm of a Bearer challenge.
func (p *ociPuller) authenticate(ctx context.Context, challenge string) error {
	scheme, params := parseChallenge(challenge)
	if !strings.EqualFold(scheme, "Bearer") || params["realm"] == "" {
		return fmt.Errorf("registry wants %q authentication; only anonymous bearer tokens are supported", challenge)
	}
	realm, err := url.Parse(params["realm"])
	if err != nil {
		return fmt.Errorf("token realm: %w", err)
	}
	q := realm.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	scope := params["scope"]
	if scope == "" {
		scope = "repository:" + p.ref.Repository + ":pull"
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("token: %s", resp.Status)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	if p.token = tok.Token; p.token == "" {
		p.token = tok.AccessToken
	}
	if p.token == "" {
		return errors.New("token: empty token")
	}
	return nil
}

// parseChallenge parses `Bearer realm="...",service="...",scope="..."`.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k] = v[1 : 1+end]
			rest = strings.TrimPrefix(strings.TrimSpace(v[2+end:]), ",")
		} else {
			val, more, _ := strings.Cut(v, ",")
			params[k] = strings.TrimSpace(val)
			rest = more
		}
		rest = strings.TrimSpace(rest)
	}
	return scheme, params
}
