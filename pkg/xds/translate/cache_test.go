package translate

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/xds/model"
)

// TestCacheEqualsBuild builds every proxy of every golden case, plus
// variants with changed labels, locality and namespace, through one Cache
// per case (so variants hit entries made for other proxies) and checks
// each output renders exactly as Build's. With MTLS on and off.
func TestCacheEqualsBuild(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	efs, err := filepath.Glob("testdata/envoyfilter/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, efs...)
	sort.Strings(files)
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			t.Parallel()
			path := f
			if base, ok := strings.CutPrefix(string(must(os.ReadFile(f))), "# base: "); ok { // as TestEnvoyFilterGolden
				b, _, _ := strings.Cut(base, "\n")
				head := must(os.ReadFile(filepath.Join("testdata/envoyfilter", strings.TrimSpace(b)+".base")))
				path = filepath.Join(t.TempDir(), filepath.Base(f))
				if err := os.WriteFile(path, append(append(head, "\n---\n"...), must(os.ReadFile(f))...), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			in, _, proxies := loadCaseAll(t, path)
			var all []*model.Proxy
			for _, p := range proxies {
				all = append(all, p, cacheVariant(p, nil, "", ""), cacheVariant(p, map[string]string{"version": "v2"}, "", ""),
					cacheVariant(p, map[string]string{"app": "other", "team": "x"}, "", ""),
					cacheVariant(p, nil, "us-east/zone-b", ""), cacheVariant(p, nil, "", "other"))
			}
			for _, mtls := range []bool{false, true} {
				in := *in
				in.MTLS = mtls
				c := NewCache(&in)
				// Twice over, so the second round is served from the cache.
				for round := range 2 {
					for i, p := range all {
						want, werr := Build(&in, p)
						got, gerr := c.Build(p)
						if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
							t.Fatalf("mtls=%v round %d proxy %d (%s %v): Build error %v, Cache.Build error %v", mtls, round, i, p.ID, p.Labels, werr, gerr)
						}
						if werr != nil {
							continue
						}
						if !slices.Equal(want.Warnings, got.Warnings) {
							t.Fatalf("mtls=%v round %d proxy %d (%s %v): warnings %q, want %q", mtls, round, i, p.ID, p.Labels, got.Warnings, want.Warnings)
						}
						if w, g := renderOutput(t, want), renderOutput(t, got); !bytes.Equal(w, g) {
							t.Fatalf("mtls=%v round %d proxy %d (%s %v): Cache.Build differs from Build:\n%s", mtls, round, i, p.ID, p.Labels, firstDiff(w, g))
						}
					}
				}
			}
		})
	}
}

// cacheVariant copies p with labels merged in (nil: labels removed),
// LOCALITY and namespace replaced when not empty.
func cacheVariant(p *model.Proxy, labels map[string]string, locality, ns string) *model.Proxy {
	c := *p
	c.Labels = map[string]string{}
	if labels != nil {
		for k, v := range p.Labels {
			c.Labels[k] = v
		}
		for k, v := range labels {
			c.Labels[k] = v
		}
	}
	c.Metadata = map[string]string{}
	for k, v := range p.Metadata {
		c.Metadata[k] = v
	}
	if locality != "" {
		c.Metadata["LOCALITY"] = locality
	}
	if ns != "" {
		c.Namespace = ns
	}
	c.ID = fmt.Sprintf("%s-variant-%v-%s-%s", p.ID, labels, locality, ns)
	return &c
}

func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n  Build:       %s\n  Cache.Build: %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d lines", len(al), len(bl))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestForProxyCopiesScope guards forProxy against a builder field that
// newBuilder sets and forProxy forgets: every field of a fresh builder
// must equal forProxy's copy.
func TestForProxyCopiesScope(t *testing.T) {
	in, p := loadCase(t, "testdata/vs_source_labels.yaml")
	want := newBuilder(in, p, nil)
	got := newBuilder(in, p, nil).forProxy(p)
	wv, gv := reflect.ValueOf(want).Elem(), reflect.ValueOf(got).Elem()
	for i := range wv.NumField() {
		name := wv.Type().Field(i).Name
		w := reflect.NewAt(wv.Field(i).Type(), wv.Field(i).Addr().UnsafePointer()).Elem().Interface()
		g := reflect.NewAt(gv.Field(i).Type(), gv.Field(i).Addr().UnsafePointer()).Elem().Interface()
		if !reflect.DeepEqual(w, g) {
			t.Errorf("builder.%s: forProxy has %v, newBuilder %v", name, g, w)
		}
	}
}

// TestCacheConcurrent builds proxies of a few outbound keys from many
// goroutines through one Cache (run with -race) and checks every output
// against Build's.
func TestCacheConcurrent(t *testing.T) {
	t.Parallel()
	in, _, proxies := loadCaseAll(t, "testdata/vs_source_labels.yaml")
	var all []*model.Proxy
	for _, p := range proxies {
		all = append(all, p, cacheVariant(p, nil, "", ""), cacheVariant(p, map[string]string{"version": "v2"}, "", ""))
	}
	want := make([][]byte, len(all))
	for i, p := range all {
		out, err := Build(in, p)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = renderOutput(t, out)
	}
	c := NewCache(in)
	var wg sync.WaitGroup
	errs := make(chan string, 8*len(all))
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range all {
				i := (k + g) % len(all)
				out, err := c.Build(all[i])
				if err != nil {
					errs <- err.Error()
					continue
				}
				if got := renderOutput(t, out); !bytes.Equal(got, want[i]) {
					errs <- fmt.Sprintf("proxy %d: %s", i, firstDiff(want[i], got))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestCacheFromEqualsBuild applies random sequences of changes to every
// golden case's configs (VirtualServices edited, deleted and restored;
// now and then another config dropped or restored, so that reuse must be
// refused) and checks after each step that a Cache made with
// NewCacheFrom(previous step's cache) gives every proxy exactly Build's
// output, and that VirtualService-only steps did reuse.
func TestCacheFromEqualsBuild(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	for fi, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			t.Parallel()
			rnd := rand.New(rand.NewPCG(uint64(seed), uint64(fi)))
			in0, _, proxies := loadCaseAll(t, f)
			var all []*model.Proxy
			for _, p := range proxies {
				all = append(all, p, cacheVariant(p, map[string]string{"version": "v2"}, "", ""))
			}
			orig := slices.Clone(in0.Configs)
			cur := slices.Clone(orig)
			prev := NewCache(in0)
			for _, p := range all {
				_, _ = prev.Build(p)
			}
			for step := range 16 {
				next := slices.Clone(cur)
				vsOnly := true
				var vsIdx []int
				for i, c := range next {
					if _, ok := c.Spec.(*networking.VirtualService); ok {
						vsIdx = append(vsIdx, i)
					}
				}
				switch r := rnd.IntN(10); {
				case r < 6 && len(vsIdx) > 0: // edit a VirtualService: timeouts on its HTTP routes
					i := vsIdx[rnd.IntN(len(vsIdx))]
					c := *next[i]
					spec := proto.Clone(c.Spec.(*networking.VirtualService)).(*networking.VirtualService)
					for _, h := range spec.GetHttp() {
						h.Timeout = durationpb.New(time.Duration(1+rnd.IntN(30)) * time.Second)
					}
					c.Spec = spec
					next[i] = &c
				case r < 8 && len(vsIdx) > 0: // delete a VirtualService
					i := vsIdx[rnd.IntN(len(vsIdx))]
					next = slices.Delete(next, i, i+1)
				case r < 9: // restore the original VirtualServices
					next = next[:0]
					for _, c := range cur {
						if _, ok := c.Spec.(*networking.VirtualService); !ok {
							next = append(next, c)
						}
					}
					for _, c := range orig {
						if _, ok := c.Spec.(*networking.VirtualService); ok {
							next = append(next, c)
						}
					}
				default: // drop a DestinationRule or restore the original configs: no reuse
					vsOnly = false
					var drIdx []int
					for i, c := range next {
						if _, ok := c.Spec.(*networking.DestinationRule); ok {
							drIdx = append(drIdx, i)
						}
					}
					if len(drIdx) > 0 && rnd.IntN(3) > 0 {
						i := drIdx[rnd.IntN(len(drIdx))]
						next = slices.Delete(next, i, i+1)
					} else {
						next = slices.Clone(orig)
					}
				}
				in := *in0
				in.Configs = next
				c := NewCacheFrom(prev, &in)
				if vsOnly && c.reuse == nil && slices.Equal(prev.selKeys, c.selKeys) {
					t.Fatalf("step %d: a VirtualService-only change did not reuse the previous cache", step)
				}
				for i, p := range all {
					want, werr := Build(&in, p)
					got, gerr := c.Build(p)
					if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
						t.Fatalf("step %d proxy %d (%s): Build error %v, Cache.Build error %v", step, i, p.ID, werr, gerr)
					}
					if werr != nil {
						continue
					}
					if w, g := renderOutput(t, want), renderOutput(t, got); !bytes.Equal(w, g) {
						t.Fatalf("step %d proxy %d (%s): NewCacheFrom's Build differs from Build:\n%s", step, i, p.ID, firstDiff(w, g))
					}
				}
				prev, cur = c, next
			}
		})
	}
}
