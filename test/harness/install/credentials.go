package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// tenantKubeconfig is the kubeconfig Cluster API writes into <cluster>-kubeconfig: the tenant
// apiserver at the address the management cluster reaches it on (its advertised endpoint,
// which the management node serves; the serving certificate carries it), authenticated as a
// member of system:masters, as Cluster API's admin kubeconfig is.
func tenantKubeconfig(env *harness.Env, cluster, user string) ([]byte, error) {
	server := env.Tenant.AdvertisedEndpoint()
	if server == "" {
		return nil, fmt.Errorf("the tenant apiserver has no advertised endpoint (no default route on this host?)")
	}
	u, err := env.Tenant.AddUser(user, "system:masters")
	if err != nil {
		return nil, err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[cluster] = &clientcmdapi.Cluster{Server: "https://" + server, CertificateAuthorityData: env.Tenant.Config.CAData}
	cfg.AuthInfos[cluster+"-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: u.Config.CertData, ClientKeyData: u.Config.KeyData}
	cfg.Contexts[cluster] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: cluster + "-admin"}
	cfg.CurrentContext = cluster
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("tenant kubeconfig: %w", err)
	}
	return b, nil
}

// keyPair is a PEM certificate and key.
type keyPair struct{ cert, key []byte }

// autoscalerTLS issues what the chart's autoscaler.tls Secrets hold: a CA, a server
// certificate for the autoscaler-provider Service's DNS names (what cluster-autoscaler dials
// and verifies) and a client certificate for cluster-autoscaler, each with the CA.
func autoscalerTLS(serverNames []string, clientName string) (ca []byte, server, client keyPair, err error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, keyPair{}, keyPair{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tenantcloud-autoscaler-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, keyPair{}, keyPair{}, fmt.Errorf("signing the autoscaler CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, keyPair{}, keyPair{}, err
	}
	issue := func(serial int64, cn string, dns []string, usage x509.ExtKeyUsage) (keyPair, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return keyPair{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return keyPair{}, fmt.Errorf("signing %s: %w", cn, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return keyPair{}, err
		}
		return keyPair{
			cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		}, nil
	}
	if server, err = issue(2, serverNames[0], serverNames, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, keyPair{}, keyPair{}, err
	}
	if client, err = issue(3, clientName, nil, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, keyPair{}, keyPair{}, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), server, client, nil
}
