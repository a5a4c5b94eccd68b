package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKubeInjectCmd(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		stdin   string
		want    []string
		wantErr string
	}{
		{"seed file", []string{"kube-inject", "-f", "../kube/inject/testdata/seed.yaml", "--image", "weft:x"}, "", []string{"name: weft-proxy", "image: weft:x", "restartPolicy: Always", "kind: Namespace", "image: docker.io/httpd:2.4"}, ""},
		{"stdin", []string{"kube-inject", "-f", "-"}, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]\n", []string{"name: weft-init", "NET_ADMIN"}, ""},
		{"no file", []string{"kube-inject"}, "", nil, "give -f"},
		{"missing file", []string{"kube-inject", "-f", "nope.yaml"}, "", nil, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := NewRoot(strings.NewReader(tc.stdin), &out, &errOut)
			root.SetArgs(tc.args)
			err := root.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestWebhookCmdWritesConfig(t *testing.T) {
	cfgOut := filepath.Join(t.TempDir(), "webhooks.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut bytes.Buffer
	root := NewRoot(strings.NewReader(""), &out, &errOut)
	root.SetArgs([]string{"webhook", "--address", "127.0.0.1:0", "--config-out", cfgOut, "--url", "https://127.0.0.1:15017"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(cfgOut)
		if err == nil && len(b) > 0 {
			for _, w := range []string{"kind: MutatingWebhookConfiguration", "kind: ValidatingWebhookConfiguration", "url: https://127.0.0.1:15017/inject", "caBundle:"} {
				if !strings.Contains(string(b), w) {
					t.Errorf("config lacks %q", w)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no config written; stderr: %s", errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("webhook: %v", err)
	}
}
