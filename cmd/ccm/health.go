package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"

	"k8s.io/client-go/tools/leaderelection"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/metrics"
)

// serveHealth serves /healthz over HTTPS on addr with a self-signed certificate until ctx ends,
// as the cloud-controller-manager framework's --secure-port did: probes read it without
// credentials (the framework always allowed /healthz), and it fails while this replica leads
// but has not renewed its Lease for leaderHealthTimeout past the lease duration, so a kubelet
// restarts a stuck leader. elector is nil without leader election. It returns the bound address
// once listening.
func serveHealth(ctx context.Context, addr string, elector *leaderelection.HealthzAdaptor) (string, error) {
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("localhost", nil, nil)
	if err != nil {
		return "", fmt.Errorf("self-signed certificate for /healthz: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return "", fmt.Errorf("self-signed certificate for /healthz: %w", err)
	}
	bound, served, err := metrics.ServeTLS(ctx, "/healthz", addr, healthHandler(elector),
		&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return "", err
	}
	go func() {
		for err := range served {
			klog.ErrorS(err, "Health endpoint stopped")
		}
	}()
	return bound, nil
}

// healthHandler answers /healthz (and /healthz/leaderElection, the framework's per-check path)
// with "ok", or 500 and the failed check.
func healthHandler(elector *leaderelection.HealthzAdaptor) http.Handler {
	check := func(w http.ResponseWriter, r *http.Request) {
		if elector != nil {
			if err := elector.Check(r); err != nil {
				http.Error(w, "[-]"+elector.Name()+" failed: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", check)
	mux.HandleFunc("GET /healthz/leaderElection", check)
	return mux
}
