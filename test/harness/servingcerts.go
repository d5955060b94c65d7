package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// ServiceIP is the kubernetes Service's ClusterIP in the harness's clusters: the first address
// of envtest's --service-cluster-ip-range ServiceCIDRv4 (also the primary range of a dual-stack
// harness cluster).
const ServiceIP = "10.0.0.1"

// apiServerNames are the names a kube-apiserver's serving certificate carries: what the
// harness's clients dial (localhost, 127.0.0.1) and, as kubeadm issues it, what pods dial —
// the kubernetes Service's IP and DNS names, so in-cluster clients on the real tenant nodes
// (test/harness/node) verify the apiserver as in a cluster.
var apiServerNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

// writeAPIServerCerts puts into certDir what envtest would otherwise generate there — the
// serving certificate and key and the ServiceAccount signing key — with the names above, and
// returns the serving CA for kubeconfigs. advertise (if not nil) is also in the certificate:
// the apiserver's advertised address, where real nodes serve it to their pods (and a
// management node's pods reach the tenant apiserver, test/harness/node). envtest keeps
// certificates it finds in its directory.
func writeAPIServerCerts(certDir string, advertise net.IP) ([]byte, error) {
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", certDir, err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating apiserver CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tenantcloud-harness-apiserver-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing apiserver CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating apiserver serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: apiServerNames, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(ServiceIP)},
	}
	if advertise != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, advertise)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing apiserver serving certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating ServiceAccount signing key: %w", err)
	}
	saTmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "sa-signer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour)}
	saDER, err := x509.CreateCertificate(rand.Reader, saTmpl, saTmpl, &saKey.PublicKey, saKey)
	if err != nil {
		return nil, fmt.Errorf("signing ServiceAccount signer certificate: %w", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string]*pem.Block{
		"apiserver.crt": {Type: "CERTIFICATE", Bytes: der},
		"sa-signer.crt": {Type: "CERTIFICATE", Bytes: saDER},
	}
	for name, k := range map[string]*ecdsa.PrivateKey{"apiserver.key": key, "sa-signer.key": saKey} {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		files[name] = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	}
	for name, block := range files {
		if err := os.WriteFile(filepath.Join(certDir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return caPEM, nil
}

// advertiseAddress is the host's primary address, what kube-apiserver advertises by default
// (the address of the default route's interface); the harness passes it explicitly so the
// serving certificate can carry it. nil when the host has no default route: the apiserver
// then chooses, and its advertised address is not in the certificate.
func advertiseAddress() net.IP {
	ip, err := utilnet.ChooseHostInterface()
	if err != nil {
		return nil
	}
	return ip
}

// AdvertisedEndpoint is host:port of the apiserver's advertised address (the kubernetes
// Service's endpoint): where the real nodes of test/harness/node serve it to their pods, and
// so the address a kubeconfig for pods on a management node names for the tenant apiserver.
// Empty when the host has no default route or the cluster is not started.
func (c *Cluster) AdvertisedEndpoint() string {
	if c.advertise == nil || c.env == nil {
		return ""
	}
	port := c.env.ControlPlane.GetAPIServer().SecureServing.Port
	if port == "" {
		return ""
	}
	return net.JoinHostPort(c.advertise.String(), port)
}
