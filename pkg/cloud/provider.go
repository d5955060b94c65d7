package cloud

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/instances"
	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/pkg/kubeconfig"
	"github.com/tenantcloud/tenantcloud/pkg/metrics"
	"github.com/tenantcloud/tenantcloud/pkg/reconnect"
)

// ProviderName is the --cloud-provider name and the scheme of providerIDs ("kubevirt://"
// is CAPK's; the provider name only labels this implementation).
const ProviderName = "tenantcloud"

// userAgent identifies the provider's own clients in both clusters' audit logs.
const userAgent = "tenantcloud-ccm"

// Options are provider settings that are not part of the shared tenant config.
type Options struct {
	// LoadBalancerClass, if set, is served by the provider itself in addition to Services
	// without a class.
	LoadBalancerClass string
	// NodeZones adds topology zone/region from the infra Node running each VM; it needs
	// `get nodes` on the management cluster.
	NodeZones bool
	// InfraQPS and InfraBurst limit requests to the management apiserver (shared by every
	// tenant's ccm). Zero keeps the rest config's values (client-go: 5 and 10).
	InfraQPS   float32
	InfraBurst int
	// Metrics records load-balancer operations and infra API requests; may be nil.
	Metrics *metrics.Metrics
}

// Provider implements cloudprovider.Interface and cloudprovider.InformerUser.
type Provider struct {
	cfg       *config.Config
	opts      Options
	infra     *infra.Client
	instances *instances.Instances
	lb        *loadbalancer.Balancer

	ctx     context.Context // from Initialize: ends when the provider must stop
	cancel  context.CancelFunc
	builder cloudprovider.ControllerClientBuilder
}

var (
	_ cloudprovider.Interface    = (*Provider)(nil)
	_ cloudprovider.InformerUser = (*Provider)(nil)
)

// Factory returns a cloudprovider.Factory for the cloud-provider registry: it reads the shared
// tenant config from the --cloud-config file and builds a Provider with opts.
func Factory(opts Options) cloudprovider.Factory {
	return func(r io.Reader) (cloudprovider.Interface, error) {
		if r == nil {
			return nil, fmt.Errorf("%s needs --cloud-config, the tenant config file", ProviderName)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("reading cloud config: %w", err)
		}
		cfg, err := config.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("cloud config: %w", err)
		}
		if err := cfg.ValidateFor(config.CCM); err != nil {
			return nil, fmt.Errorf("cloud config: %w", err)
		}
		return New(cfg, opts)
	}
}

// New builds a Provider for cfg. Nothing connects to a cluster until Initialize.
func New(cfg *config.Config, opts Options) (*Provider, error) {
	infraCfg, err := kubeconfig.RESTConfig(cfg.InfraKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("infra kubeconfig: %w", err)
	}
	return NewWithInfraConfig(cfg, opts, infraCfg)
}

// NewWithInfraConfig is New with an explicit management-cluster rest config.
func NewWithInfraConfig(cfg *config.Config, opts Options, infraCfg *rest.Config) (*Provider, error) {
	infraCfg = rest.AddUserAgent(rest.CopyConfig(infraCfg), userAgent)
	infraCfg.Wrap(opts.Metrics.WrapInfraTransport)
	if opts.InfraQPS > 0 {
		infraCfg.QPS, infraCfg.Burst = opts.InfraQPS, opts.InfraBurst
	}
	// One gate for every infra client: after an outage the caches and the load balancer's
	// writes resume within seconds of the apiserver answering (see pkg/reconnect).
	infraCfg, _, err := reconnect.Config(infraCfg, "infra")
	if err != nil {
		return nil, err
	}
	scope := infra.Scope{Namespace: cfg.InfraNamespace, ClusterName: cfg.ClusterName}
	ic, err := infra.New(infraCfg, scope)
	if err != nil {
		return nil, err
	}
	var topo *infra.NodeTopology
	if opts.NodeZones {
		topo = ic.NodeTopology()
	}
	return &Provider{
		cfg:       cfg,
		opts:      opts,
		infra:     ic,
		instances: instances.New(ic, topo),
		lb:        loadbalancer.New(ic, cfg.LoadBalancer, loadbalancer.Options{Class: opts.LoadBalancerClass, Metrics: opts.Metrics}),
	}, nil
}

// Initialize starts the scoped infra cache. cmd/ccm calls it once it is the leader, so
// nothing here runs on a standby replica.
func (p *Provider) Initialize(builder cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go func() {
		<-stop
		p.cancel()
	}()
	p.builder = builder
	go func() {
		if err := p.infra.Start(p.ctx); err != nil {
			klog.ErrorS(err, "Infra cache stopped")
		}
	}()
}

// SetInformers hands the provider the shared tenant informer factory (started by the
// caller after every controller is set up); the load balancer registers its handlers here.
func (p *Provider) SetInformers(factory informers.SharedInformerFactory) {
	if p.ctx == nil {
		klog.ErrorS(nil, "SetInformers called before Initialize; load balancer controllers not started")
		return
	}
	stripManagedFields(factory)
	client, err := p.builder.Client(userAgent)
	if err != nil {
		klog.ErrorS(err, "Building tenant client; load balancer controllers not started")
		return
	}
	// Events get a client (and so a rate limiter) of their own: after a burst of Services they
	// would otherwise hold back the status patches that carry addresses to the tenant.
	eventClient, err := p.builder.Client(userAgent + "-events")
	if err != nil {
		klog.ErrorS(err, "Building tenant event client; load balancer controllers not started")
		return
	}
	broadcaster := record.NewBroadcaster(record.WithContext(p.ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventClient.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: userAgent})
	go func() {
		<-p.ctx.Done()
		broadcaster.Shutdown()
	}()
	if err := p.lb.Start(p.ctx, loadbalancer.Tenant{Client: client, Recorder: recorder, Informers: factory}); err != nil {
		klog.ErrorS(err, "Starting load balancer controllers")
	}
}

// stripManagedFields drops managedFields from the tenant objects the shared informers
// hold for the load balancer and the upstream node and service controllers, none of which
// reads them; they are a large part of each Service, EndpointSlice and Node once several
// writers touched it. cmd/ccm calls SetInformers before any controller starts the
// informers; were one started already, it keeps its objects whole.
func stripManagedFields(factory informers.SharedInformerFactory) {
	for _, inf := range []toolscache.SharedIndexInformer{
		factory.Core().V1().Services().Informer(),
		factory.Core().V1().Nodes().Informer(),
		factory.Discovery().V1().EndpointSlices().Informer(),
	} {
		if err := inf.SetTransform(withoutManagedFields); err != nil {
			klog.ErrorS(err, "Tenant informer keeps managedFields")
		}
	}
}

func withoutManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok { // tombstones pass through
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// LoadBalancer is MetalLB in the infra cluster.
func (p *Provider) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return p.lb, true }

// Instances is not implemented: InstancesV2 replaces it.
func (p *Provider) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 maps tenant Nodes to this cluster's VMs.
func (p *Provider) InstancesV2() (cloudprovider.InstancesV2, bool) { return p.instances, true }

// Zones is not implemented: InstancesV2 reports zones.
func (p *Provider) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not implemented.
func (p *Provider) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not implemented: the tenant's CNI routes pod traffic between VMs.
func (p *Provider) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName is ProviderName.
func (p *Provider) ProviderName() string { return ProviderName }

// HasClusterID is true: every infra object is scoped to the configured cluster name.
func (p *Provider) HasClusterID() bool { return true }
