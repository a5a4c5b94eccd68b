package kubeca_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/pkg/ca"
	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/pkg/ca/kubeca"
	"github.com/weftmesh/weft/pkg/kube/kubetest"
)

// serveCA serves c's IstioCertificateService over TLS on 127.0.0.1:0.
func serveCA(t *testing.T, c *ca.CA, auth ca.Authenticator) string {
	t.Helper()
	src, err := c.NewServingCertSource([]string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(src.TLSConfig())))
	ca.RegisterGRPC(srv, c, auth)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func token(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, sa string, aud ...string) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: aud, ExpirationSeconds: func() *int64 { v := int64(600); return &v }(),
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestKubernetesCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	cs := cl.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := ca.New(ca.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	joins, err := ca.NewTokenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveCA(t, c, ca.Chain{joins, kubeca.NewTokenReview(cs)})

	// Root publisher first, so that the namespace below is a new one.
	pub, err := kubeca.NewRootPublisher(kubeca.RootPublisherOptions{Client: cs, Roots: c.RootsPEM, CheckInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("publisher: %v", err)
		}
	})

	const ns = "team"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"alice", "bob"} {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	alice := token(ctx, t, cs, ns, "alice", kubeca.DefaultAudience)
	cfg := func(tok, want string) caclient.Config {
		return caclient.Config{Addr: addr, RootsPEM: c.RootsPEM(), ServerName: "localhost", Token: tok, RequestedIdentity: want}
	}

	t.Run("service account token gets its own identity", func(t *testing.T) {
		b, err := caclient.Fetch(ctx, cfg(alice, ""))
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Leaf.URIs) != 1 || b.Leaf.URIs[0].String() != "spiffe://cluster.local/ns/team/sa/alice" {
			t.Fatalf("leaf URIs %v", b.Leaf.URIs)
		}
		b, err = caclient.Fetch(ctx, cfg(alice, "spiffe://cluster.local/ns/team/sa/alice"))
		if err != nil {
			t.Fatalf("asking for the own identity explicitly: %v", err)
		}
	})
	for _, tc := range []struct {
		name, token, want string
		code              codes.Code
	}{
		{"token for alice asking for bob", alice, "spiffe://cluster.local/ns/team/sa/bob", codes.PermissionDenied},
		{"garbage token", "eyJhbGciOiJSUzI1NiJ9.garbage.signature", "", codes.Unauthenticated},
		{"wrong audience", token(ctx, t, cs, ns, "bob", "https://kubernetes.default.svc"), "", codes.Unauthenticated},
		{"the admin's static token is not a service account", cl.Token, "", codes.Unauthenticated},
		{"unknown join token", ca.TokenPrefix + "nope", "", codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := caclient.Fetch(ctx, cfg(tc.token, tc.want))
			if status.Code(errors.Unwrap(err)) != tc.code && status.Code(err) != tc.code {
				t.Fatalf("got %v, want code %s", err, tc.code)
			}
		})
	}
	t.Run("bob's own token", func(t *testing.T) {
		b, err := caclient.Fetch(ctx, cfg(token(ctx, t, cs, ns, "bob", kubeca.DefaultAudience), ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/team/sa/bob" {
			t.Fatalf("leaf %s", got)
		}
	})
	t.Run("join tokens still work", func(t *testing.T) {
		jt, err := joins.Create("vm", "legacy", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b, err := caclient.Fetch(ctx, cfg(jt, ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/vm/sa/legacy" {
			t.Fatalf("leaf %s", got)
		}
	})

	// The root ConfigMap: in the new namespace, after a rotation, after an
	// edit and after a delete.
	rootIs := func(want string) func() error {
		return func() error {
			cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, kubeca.RootCertConfigMap, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := cm.Data[kubeca.RootCertKey]; got != want {
				return fmt.Errorf("root-cert.pem has %d bytes, want %d", len(got), len(want))
			}
			return nil
		}
	}
	waitFor(t, "root ConfigMap in new namespace", rootIs(string(c.RootsPEM())))
	before := string(c.RootsPEM())
	if err := c.Rotate(); err != nil {
		t.Fatal(err)
	}
	if string(c.RootsPEM()) == before {
		t.Fatal("rotation did not change the roots")
	}
	waitFor(t, "root ConfigMap after rotation", rootIs(string(c.RootsPEM())))
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, kubeca.RootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[kubeca.RootCertKey] = "tampered"
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "root ConfigMap restored after an edit", rootIs(string(c.RootsPEM())))
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, kubeca.RootCertConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "root ConfigMap recreated after a delete", rootIs(string(c.RootsPEM())))
	for _, sys := range []string{"default", "kube-system"} {
		if _, err := cs.CoreV1().ConfigMaps(sys).Get(ctx, kubeca.RootCertConfigMap, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s: %v", sys, err)
		}
	}
}
