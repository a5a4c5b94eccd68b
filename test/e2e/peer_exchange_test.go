package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// tcpPayload looks like a metadata exchange header itself (magic, length
// 5): it must reach the app exactly as sent, after the proxies' own frames
// were stripped.
const tcpPayload = "\x3d\x23\x04\x67\x00\x00\x00\x05 opaque bytes through the mesh\n"

// TestTCPMetadataExchange is Istio's TCP metadata exchange between two
// weft sidecars with STRICT mTLS: a raw TCP echo service declared tcp
// behind the db sidecar (labels app=db, version=v1), a client sidecar
// (app=client, version=v2) opening tunnels to it. Both sidecars'
// istio_tcp_* series carry the peer's app, version, canonical service and
// workload (reporter=source on the client, reporter=destination on db),
// and the app receives exactly the bytes the client sent (the frames never
// leak). A plain Go TLS client with a mesh certificate and ALPN "istio"
// (no istio-peer-exchange) is served too, its series without peer labels.
func TestTCPMetadataExchange(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	echo, echoPort := listenLocal(t)
	t.Cleanup(func() { echo.Close() })
	got := make(chan []byte, 100) // what the app read on each connection
	echotest.Serve(t, echo, func(c net.Conn) {
		var rec bytes.Buffer
		_, _ = io.Copy(c, io.TeeReader(c, &rec))
		got <- rec.Bytes()
	})

	dataDir, configDir := t.TempDir(), t.TempDir()
	writeAtomic(t, filepath.Join(configDir, "peer-authentication.yaml"), peerAuthn("STRICT"))
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--data-dir", dataDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms")
	xds, caAddr := cp.ListenAddress(t, "xDS server"), cp.ListenAddress(t, "CA")
	db, dbProc := startMeshedProxy(t, dataDir, xds, caAddr, "db", "--app-port", echoPort, "--service", "db:9000/tcp", "--labels", "app=db,version=v1")
	client, clientProc := startMeshedProxy(t, dataDir, xds, caAddr, "client", "--labels", "app=client,version=v2")

	deadline := time.Now().Add(60 * time.Second)
	for {
		err := tcpEchoPayload(client.Outbound, "db:9000", tcpPayload)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo through the sidecars: %v\ndb:\n%s\nclient:\n%s", err, dbProc.Stderr(), clientProc.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		if err := tcpEchoPayload(client.Outbound, "db:9000", tcpPayload); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	checkApp := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case b := <-got:
				if string(b) != tcpPayload {
					t.Errorf("the app read %q, want exactly %q", b, tcpPayload)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the app saw %d of %d connections end", i, n)
			}
		}
	}
	checkApp(4)

	clientWant := map[string]string{"reporter": "source", "source_workload": "client", "source_app": "client", "source_version": "v2",
		"destination_workload": "db", "destination_workload_namespace": "default", "destination_app": "db", "destination_version": "v1",
		"destination_canonical_service": "db", "destination_canonical_revision": "v1", "destination_service_name": "db",
		"destination_principal": "spiffe://cluster.local/ns/default/sa/db"}
	dbWant := map[string]string{"reporter": "destination", "source_workload": "client", "source_workload_namespace": "default",
		"source_app": "client", "source_version": "v2", "source_canonical_service": "client", "source_canonical_revision": "v2",
		"destination_workload": "db", "destination_app": "db", "destination_version": "v1",
		"source_principal": "spiffe://cluster.local/ns/default/sa/client", "connection_security_policy": "mutual_tls"}
	waitSeries := func(who, addr string, want map[string]string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			m := scrape(t, addr)
			if hasSeries(m, "istio_tcp_connections_opened_total", want) && hasSeries(m, "istio_tcp_sent_bytes_total", want) &&
				hasSeries(m, "istio_tcp_received_bytes_total", want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no istio_tcp_* series with %v:\n%s", who, want, grepLines(m, "istio_tcp_"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitSeries("client sidecar", client.Metrics, clientWant)
	waitSeries("db sidecar", db.Metrics, dbWant)

	// A plain Go TLS client: the mesh certificate of service account
	// "plain", ALPN "istio" only, straight to db's inbound listener. No
	// exchange: the bytes go through as they are, and db reports the
	// connection with the certificate's identity and no peer labels.
	tokFile := joinTokenFile(t, dataDir, "default", "plain")
	tok, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := os.ReadFile(filepath.Join(dataDir, "ca", "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := caclient.Fetch(ctx, caclient.Config{Addr: caAddr, RootsPEM: roots, Token: strings.TrimSpace(string(tok))})
	if err != nil {
		t.Fatal(err)
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, r := range raw[1:] {
			if c, err := x509.ParseCertificate(r); err == nil {
				inter.AddCert(c)
			}
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: b.Roots, Intermediates: inter})
		return err
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", db.Inbound, &tls.Config{Certificates: []tls.Certificate{b.Cert},
		InsecureSkipVerify: true, VerifyPeerCertificate: verify, NextProtos: []string{"istio"}}) //nolint:gosec // the chain is verified by VerifyPeerCertificate
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "istio" {
		t.Errorf("plain client negotiated %q, want istio", p)
	}
	if err := echoPayload(c, bufio.NewReader(c), tcpPayload); err != nil {
		t.Fatalf("plain TLS client: %v", err)
	}
	c.Close()
	checkApp(1)
	waitSeries("db sidecar (plain client)", db.Metrics, map[string]string{"reporter": "destination",
		"source_principal": "spiffe://cluster.local/ns/default/sa/plain", "source_workload": "unknown", "source_app": "unknown",
		"source_version": "unknown", "source_workload_namespace": "default", "connection_security_policy": "mutual_tls"})
}

// tcpEchoPayload opens a CONNECT tunnel through outbound to target and
// checks that payload comes back.
func tcpEchoPayload(outbound, target, payload string) error {
	c, err := net.DialTimeout("tcp", outbound, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("CONNECT: %d", resp.StatusCode)
	}
	return echoPayload(c, br, payload)
}

func echoPayload(c net.Conn, br *bufio.Reader, payload string) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, payload); err != nil {
		return err
	}
	b := make([]byte, len(payload))
	if _, err := io.ReadFull(br, b); err != nil {
		return err
	}
	if string(b) != payload {
		return fmt.Errorf("echo %q, want %q", b, payload)
	}
	return nil
}
