package caclient_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/ca/caclient"
)

func selfSigned(t *testing.T, name string, isCA bool, from, to time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: from, NotAfter: to, IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParseRoots(t *testing.T) {
	now := time.Now()
	good := selfSigned(t, "good", true, now.Add(-time.Hour), now.Add(time.Hour))
	good2 := selfSigned(t, "good2", true, now.Add(-time.Hour), now.Add(time.Hour))
	expired := selfSigned(t, "old", true, now.Add(-2*time.Hour), now.Add(-time.Hour))
	future := selfSigned(t, "future", true, now.Add(time.Hour), now.Add(2*time.Hour))
	leaf := selfSigned(t, "leaf", false, now.Add(-time.Hour), now.Add(time.Hour))

	if rs, err := caclient.ParseRoots(append(append([]byte{}, good...), good2...), now); err != nil || len(rs) != 2 {
		t.Fatalf("two good roots: %d, %v", len(rs), err)
	}
	for _, tc := range []struct {
		name string
		pem  []byte
		want string
	}{
		{"expired", expired, `root "CN=old" expired at`},
		{"expired after a good one", append(append([]byte{}, good...), expired...), `"CN=old" expired`},
		{"not yet valid", future, "not valid before"},
		{"not a CA", leaf, "not a CA"},
		{"empty", []byte("garbage"), "no PEM CERTIFICATE"},
	} {
		if _, err := caclient.ParseRoots(tc.pem, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
