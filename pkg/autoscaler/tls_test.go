package autoscaler_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64 = 1

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for name, for server or client use.
func (ca *testCA) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMutualTLS serves over real TCP with mTLS, as cluster-autoscaler's externalgrpc cloud
// config sets it up: only clients with a certificate from the configured CA get through, and
// a rotated server certificate is served without a restart.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.md("workers", mdOpts{annotations: bounds("0", "3")})

	dir := t.TempDir()
	ca, rogue := newCA(t, "autoscaler-ca"), newCA(t, "rogue-ca")
	srvCert, srvKey := ca.issue(t, "autoscaler-provider", true)
	certFile, keyFile := writeFile(t, dir, "tls.crt", srvCert), writeFile(t, dir, "tls.key", srvKey)
	caFile := writeFile(t, dir, "ca.crt", ca.pem)
	tlsCfg, err := autoscaler.ServerTLS(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}

	f.start() // provider and its plaintext test server; the mTLS server below shares the provider
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := autoscaler.NewServer(f.prov, tlsCfg)
	srv.SetReady()
	go func() { _ = srv.GRPC.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(time.Second) })
	addr := lis.Addr().String()

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	clientTLS := func(certPEM, keyPEM []byte) credentials.TransportCredentials {
		cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return credentials.NewTLS(cfg)
	}

	good := dial(t, addr, clientTLS(ca.issue(t, "cluster-autoscaler", false)))
	resp, err := good.NodeGroups(f.ctx, &protos.NodeGroupsRequest{})
	if err != nil || len(resp.GetNodeGroups()) != 1 {
		t.Fatalf("client with a valid certificate: %v, %v", resp, err)
	}
	for name, creds := range map[string]credentials.TransportCredentials{
		"no client certificate":     clientTLS(nil, nil),
		"certificate of another CA": clientTLS(rogue.issue(t, "cluster-autoscaler", false)),
		"plaintext":                 insecure.NewCredentials(),
	} {
		_, err := dial(t, addr, creds).NodeGroups(f.ctx, &protos.NodeGroupsRequest{})
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
			t.Errorf("%s: got %v, want Unavailable (refused at the handshake)", name, err)
		}
	}

	// Rotate the server certificate: new handshakes get the new one.
	newCert, newKey := ca.issue(t, "autoscaler-provider", true)
	writeFile(t, dir, "tls.key", newKey)
	writeFile(t, dir, "tls.crt", newCert)
	later := time.Now().Add(time.Second) // make the change visible whatever the mtime granularity
	for _, p := range []string{certFile, keyFile} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	block, _ := pem.Decode(newCert)
	want, _ := x509.ParseCertificate(block.Bytes)
	pair, err := tls.X509KeyPair(ca.issue(t, "cluster-autoscaler", false))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(want.SerialNumber) != 0 {
		t.Fatalf("server still presents serial %v after rotation, want %v", got, want.SerialNumber)
	}
}
