package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/ca"
)

func TestTokenCreateCommand(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "ok", args: []string{"token", "create", "--namespace", "shop", "--service-account", "cart", "--data-dir", dir}},
		{name: "ttl", args: []string{"token", "create", "-n", "shop", "--service-account", "cart", "--ttl", "1h", "--data-dir", dir}},
		{name: "missing sa", args: []string{"token", "create", "--namespace", "shop", "--data-dir", dir}, wantCode: 1, wantErr: "service-account"},
		{name: "bad sa", args: []string{"token", "create", "--service-account", "Cart_1", "--data-dir", dir}, wantCode: 2, wantErr: "DNS-1123"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runWeft(t, "", tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("code %d stderr %q; want %d containing %q", code, errOut, tc.wantCode, tc.wantErr)
			}
			if tc.wantCode != 0 {
				return
			}
			tok := strings.TrimSpace(out)
			store, err := ca.NewTokenStore(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			id, err := store.Authenticate(context.Background(), tok)
			if err != nil || id != (ca.Identity{Namespace: "shop", ServiceAccount: "cart"}) {
				t.Fatalf("printed token %q authenticates as %v, %v", tok, id, err)
			}
		})
	}
}
