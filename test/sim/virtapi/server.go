package virtapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
)

// Options configures the simulated virt-api. The zero value registers it as KubeVirt does.
type Options struct {
	// Faults is consulted at FaultAddVolume and FaultRemoveVolume; nil injects nothing.
	Faults *fault.Injector
	// Gates are KubeVirt's feature gates, read on every request; nil is HotplugVolumes on.
	Gates *featuregate.Gates
	// Namespace and ServiceName name the Service the APIService points at (kubevirt/virt-api).
	Namespace, ServiceName string
	// AvailableTimeout bounds the wait for the APIService to become Available (default 60s).
	AvailableTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Namespace == "" {
		o.Namespace = "kubevirt"
	}
	if o.ServiceName == "" {
		o.ServiceName = "virt-api"
	}
	if o.AvailableTimeout <= 0 {
		o.AvailableTimeout = time.Minute
	}
}

// Server is a running simulated virt-api. Only one may be registered per apiserver: the
// APIService name is fixed by the API group.
type Server struct {
	opts   Options
	client client.Client
	faults *fault.Injector
	gates  *featuregate.Gates
	caPEM  []byte
	addr   string
	http   *http.Server

	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// Start serves the subresource API on 127.0.0.1 and registers it with the management
// apiserver behind mgmt, returning once kube-apiserver reports the APIService Available and
// proxies to it. The server stops and deregisters when ctx ends or Stop is called.
func Start(ctx context.Context, mgmt *rest.Config, opts Options) (*Server, error) {
	opts.defaults()
	scheme, err := harness.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(mgmt, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("virt-api: building management client: %w", err)
	}
	fp, err := loadFrontProxy(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("virt-api: %w", err)
	}
	svcDNS := fmt.Sprintf("%s.%s.svc", opts.ServiceName, opts.Namespace)
	cert, err := newServingCert([]string{svcDNS, svcDNS + ".cluster.local", "localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("virt-api: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("virt-api: listening: %w", err)
	}
	s := &Server{opts: opts, client: c, faults: opts.Faults, gates: opts.Gates, caPEM: cert.caPEM, addr: ln.Addr().String(), done: make(chan struct{})}

	mux := http.NewServeMux()
	registerDiscovery(mux)
	s.registerVolumeHandlers(mux)
	auth := &authorizer{fp: fp, sar: c}
	s.http = &http.Server{
		Handler:           auth.withAuth(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          klog.NewStandardLogger("WARNING"),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert.cert},
			// Like upstream: a client certificate is optional at the TLS layer (discovery is
			// open), but one that is sent must chain to the front-proxy CA and carry an
			// allowed name, and every subresource call requires one.
			ClientAuth:            tls.VerifyClientCertIfGiven,
			ClientCAs:             fp.clientCAs,
			VerifyPeerCertificate: fp.verifyPeer,
		},
	}
	go func() {
		defer close(s.done)
		if err := s.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "virt-api server failed", "addr", s.addr)
		}
	}()

	port, err := strconv.Atoi(portOf(s.addr))
	if err != nil {
		_ = s.Stop(context.Background())
		return nil, fmt.Errorf("virt-api: parsing port of %s: %w", s.addr, err)
	}
	if err := s.register(ctx, mgmt, int32(port)); err != nil {
		_ = s.Stop(context.Background())
		return nil, fmt.Errorf("virt-api: %w", err)
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Stop(context.Background())
		case <-s.done:
		}
	}()
	klog.InfoS("Simulated virt-api serving through the aggregation layer", "addr", s.addr, "apiservice", APIServiceName)
	return s, nil
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// CABundle is the PEM CA that signed the serving certificate (the APIService's caBundle).
func (s *Server) CABundle() []byte { return append([]byte(nil), s.caPEM...) }

// Stop deregisters the APIService and Service, then shuts the server down. It is idempotent
// and safe to call from t.Cleanup as well as after ctx ended.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		// Deregister first, so the apiserver stops routing here (and discovery of the whole
		// cluster does not report an unavailable group) before the port closes.
		err := s.deregister(ctx)
		if serr := s.http.Shutdown(ctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("virt-api: shutting down: %w", serr))
		}
		s.stopErr = err
	})
	return s.stopErr
}
