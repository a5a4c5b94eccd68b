package kubeca

import (
	"errors"
	"testing"

	"github.com/weftmesh/weft/pkg/ca"
)

func TestIdentityFromUsername(t *testing.T) {
	for _, tc := range []struct {
		user    string
		want    ca.Identity
		wantErr string
	}{
		{user: "system:serviceaccount:shop:cart", want: ca.Identity{Namespace: "shop", ServiceAccount: "cart"}},
		{user: "system:serviceaccount:shop:cart.v2", want: ca.Identity{Namespace: "shop", ServiceAccount: "cart.v2"}},
		{user: "admin", wantErr: "not a service account"},
		{user: "system:serviceaccount:shop", wantErr: "malformed"},
		{user: "system:serviceaccount:shop:a:b", wantErr: "malformed"},
		{user: "system:serviceaccount:Shop:cart", wantErr: "DNS-1123"},
		{user: "system:serviceaccount::cart", wantErr: "DNS-1123"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			got, err := identityFromUsername(tc.user)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ca.ErrInvalidToken) || !contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want ErrInvalidToken mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
