package jwt_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

var b64 = base64.RawURLEncoding

// keys is a test signing identity: an RSA key (kid rsa-1) and an EC P-256
// key (kid ec-1), and their public JWKS.
type keys struct {
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	jwks string
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecb, err := ek.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64.EncodeToString(rk.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(rk.E)).Bytes())},
		{"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64.EncodeToString(ecb[1:33]), "y": b64.EncodeToString(ecb[33:])},
	}}
	b, _ := json.Marshal(set)
	return &keys{rsa: rk, ec: ek, jwks: string(b)}
}

func segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(b)
}

// sign returns a compact JWS of claims with alg RS256 / ES256 / HS256
// (secret = hsKey) / none; kid "" omits the header.
func (k *keys) sign(t testing.TB, alg, kid string, claims map[string]any, hsKey []byte) string {
	t.Helper()
	hdr := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		hdr["kid"] = kid
	}
	return k.signHeader(t, hdr, claims, hsKey)
}

// signHeader signs claims with the JWS header hdr (its alg chooses the key).
func (k *keys) signHeader(t testing.TB, hdr, claims map[string]any, hsKey []byte) string {
	t.Helper()
	alg, _ := hdr["alg"].(string)
	in := segment(t, hdr) + "." + segment(t, claims)
	h := sha256.Sum256([]byte(in))
	var sig []byte
	switch alg {
	case "RS256":
		s, err := rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, h[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = s
	case "ES256":
		r, s, err := ecdsa.Sign(rand.Reader, k.ec, h[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	case "HS256":
		m := hmac.New(sha256.New, hsKey)
		m.Write([]byte(in))
		sig = m.Sum(nil)
	case "none":
	default:
		t.Fatalf("alg %s", alg)
	}
	return in + "." + b64.EncodeToString(sig)
}

// rsaPublicPEM is the RSA public key as an attacker would use it as an
// HMAC secret (algorithm confusion).
func (k *keys) rsaPublicPEM(t testing.TB) []byte {
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// claims returns valid claims for the seed's jwt-auth rule at now.
func claims(now time.Time, over map[string]any) map[string]any {
	c := map[string]any{
		"iss": "your-issuer", "sub": "alice", "aud": []string{"your-audience"},
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "groups": []string{"dev", "ops"}, "scope": "read write",
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}
