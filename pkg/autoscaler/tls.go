package autoscaler

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ServerTLS builds the server's TLS configuration from PEM files, as cluster-autoscaler's
// externalgrpc cloud config expects them (cert, key, and the CA the client certificate must
// chain to). With caFile set, clients without a valid certificate are refused at the
// handshake. The key pair is re-read when its files change, so a rotated certificate is picked
// up without a restart.
func ServerTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.get()
		},
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading client CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA bundle %s holds no PEM certificate", caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// keyPair caches a certificate and reloads it when either file's modification time changes.
type keyPair struct {
	certFile, keyFile string

	mu              sync.Mutex
	cert            *tls.Certificate
	certMod, keyMod time.Time
}

func (k *keyPair) get() (*tls.Certificate, error) {
	certMod, err1 := modTime(k.certFile)
	keyMod, err2 := modTime(k.keyFile)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := errors.Join(err1, err2); err != nil {
		if k.cert != nil {
			return k.cert, nil // mid-rotation; keep serving the last good pair
		}
		return nil, fmt.Errorf("reading TLS key pair: %w", err)
	}
	if k.cert != nil && certMod.Equal(k.certMod) && keyMod.Equal(k.keyMod) {
		return k.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.cert != nil {
			klog.ErrorS(err, "Cannot reload the TLS key pair; serving the previous one", "cert", k.certFile)
			return k.cert, nil
		}
		return nil, fmt.Errorf("loading TLS key pair %s, %s: %w", k.certFile, k.keyFile, err)
	}
	if k.cert != nil {
		klog.InfoS("Reloaded the TLS key pair", "cert", k.certFile)
	}
	k.cert, k.certMod, k.keyMod = &cert, certMod, keyMod
	return k.cert, nil
}

func modTime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
