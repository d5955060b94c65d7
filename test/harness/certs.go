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
	"os"
	"path/filepath"
	"time"
)

// FrontProxyClientName is the CN of the certificate kube-apiserver presents to aggregated API
// servers; it is the only name in --requestheader-allowed-names.
const FrontProxyClientName = "front-proxy-client"

// frontProxy holds the files kube-apiserver needs to proxy to aggregated API servers. envtest
// sets none of the requestheader flags, and without them an aggregated server cannot learn who
// the caller is.
type frontProxy struct {
	CAFile, CertFile, KeyFile string
}

func writeFrontProxyCerts(dir string) (frontProxy, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return frontProxy{}, fmt.Errorf("generating front-proxy CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "front-proxy-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return frontProxy{}, fmt.Errorf("signing front-proxy CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return frontProxy{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return frontProxy{}, fmt.Errorf("generating front-proxy client key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: FrontProxyClientName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return frontProxy{}, fmt.Errorf("signing front-proxy client cert: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return frontProxy{}, err
	}
	fp := frontProxy{
		CAFile:   filepath.Join(dir, "front-proxy-ca.crt"),
		CertFile: filepath.Join(dir, "front-proxy-client.crt"),
		KeyFile:  filepath.Join(dir, "front-proxy-client.key"),
	}
	for path, block := range map[string]*pem.Block{
		fp.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		fp.CertFile: {Type: "CERTIFICATE", Bytes: der},
		fp.KeyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return frontProxy{}, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return fp, nil
}
