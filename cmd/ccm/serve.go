package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	nodecontroller "k8s.io/cloud-provider/controllers/node"
	nodelifecyclecontroller "k8s.io/cloud-provider/controllers/nodelifecycle"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"
	// The upstream controllers' workqueue metrics go to component-base's registry, which the
	// metrics endpoint serves (the framework linked this for the ccm before).
	_ "k8s.io/component-base/metrics/prometheus/workqueue"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/cloud"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/kubeconfig"
)

// serve runs the three upstream controllers the ccm needs — cloud-node, cloud-node-lifecycle and
// service-lb (k8s.io/cloud-provider/controllers/...) — with the tenantcloud provider on one
// shared tenant informer factory, behind client-go leader election. It wires them as
// k8s.io/cloud-provider/app does (same Lease, event source, client names, worker counts and
// defaults) without linking app: app brings the apiserver's serving, authentication and
// authorization stack (184 packages of k8s.io/apiserver), whose code pages were most of the
// ccm's resident memory, for an HTTPS endpoint the ccm barely used.
func (f *ccmFlags) serve(ctx context.Context, cfg *config.Config, opts cli.Options) error {
	provider, err := cloud.New(cfg, f.providerOptions(opts.Metrics))
	if err != nil {
		return fmt.Errorf("cloud provider: %w", err)
	}
	tenantCfg, err := kubeconfig.RESTConfig(cfg.TenantKubeconfig)
	if err != nil {
		return fmt.Errorf("tenant kubeconfig: %w", err)
	}
	builder := cloud.ClientBuilder{RESTConfig: f.tenantRESTConfig(tenantCfg)}
	m := &manager{flags: f, cfg: cfg, provider: provider, builder: builder}

	var elector *leaderelection.HealthzAdaptor
	if f.leaderElect {
		elector = leaderelection.NewLeaderHealthzAdaptor(leaderHealthTimeout)
	}
	if f.securePort != 0 {
		if _, err := serveHealth(ctx, net.JoinHostPort("", strconv.Itoa(f.securePort)), elector); err != nil {
			return fmt.Errorf("--secure-port: %w", err)
		}
	}
	klog.InfoS("Starting cloud controllers", "provider", cloud.ProviderName, "controllers", controllers,
		"tenantKubeconfig", cfg.TenantKubeconfig, "leaderElect", f.leaderElect)
	if !f.leaderElect {
		return m.run(ctx)
	}
	return m.runElected(ctx, elector)
}

// controllers are the upstream controllers the ccm runs, by their cloud-controller-manager
// names. The route controller is not among them: the tenant's CNI routes between VMs, there
// are no cloud routes.
var controllers = []string{"cloud-node-controller", "cloud-node-lifecycle-controller", "service-lb-controller"}

// Settings the cloud-controller-manager framework fixed by default and the ccm keeps.
const (
	// leaseName is the framework's --leader-elect-resource-name default; the charts' Lease
	// Role and the suites name it, and replicas of an older ccm elect on it.
	leaseName = "cloud-controller-manager"
	// eventSource is the component of the leader-election Events, as the framework's.
	eventSource = "cloud-controller-manager"
	// minResyncPeriod is the framework's --min-resync-period: informers resync every 12–24 h.
	minResyncPeriod = 12 * time.Hour
	// leaderHealthTimeout is how long past an unrenewed lease /healthz still answers ok.
	leaderHealthTimeout = 20 * time.Second
	// nodeSyncs are the cloud-node controller's workers (--concurrent-node-syncs, and
	// --concurrent-node-status-updates derived from it).
	nodeSyncs = 1
)

// tenantRESTConfig is the tenant rest config every client of the ccm starts from: protobuf, no
// compression and the --kube-api-qps/--kube-api-burst limits, as the framework set them.
func (f *ccmFlags) tenantRESTConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.DisableCompression = true
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.QPS, cfg.Burst = f.tenantQPS, f.tenantBurst
	return cfg
}

type manager struct {
	flags    *ccmFlags
	cfg      *config.Config
	provider *cloud.Provider
	builder  cloud.ClientBuilder
}

// runElected campaigns for the Lease and runs the controllers while this replica leads. Losing
// the Lease is an error, so the process exits and its replacement campaigns afresh (the
// controllers and caches cannot be stopped and restarted cleanly in place). The Lease is not
// released on a normal stop, as the framework did not release it either.
func (m *manager) runElected(ctx context.Context, elector *leaderelection.HealthzAdaptor) error {
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader election identity: %w", err)
	}
	// A uniquifier, so two processes on one host never both lead.
	id := host + "_" + string(uuid.NewUUID())

	// The lock's client times out before the renew deadline, so one hung request cannot lose
	// the Lease (client-go's NewFromKubeconfig does the same).
	lockCfg := m.builder.ConfigOrDie("leader-election")
	lockCfg.Timeout = max(time.Second, m.flags.renewDeadline/2)
	lockClient, err := kubernetes.NewForConfig(lockCfg)
	if err != nil {
		return fmt.Errorf("leader election client: %w", err)
	}
	eventClient, err := m.builder.Client(eventSource)
	if err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(0)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventClient.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, m.flags.leaseNamespace, leaseName,
		lockClient.CoreV1(), lockClient.CoordinationV1(), resourcelock.ResourceLockConfig{
			Identity:      id,
			EventRecorder: broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: eventSource}),
		})
	if err != nil {
		return fmt.Errorf("leader election lock: %w", err)
	}

	// A controller start that fails ends the campaign too, so the process exits instead of
	// holding the Lease with nothing running.
	electCtx, stopElecting := context.WithCancel(ctx)
	defer stopElecting()
	runErr := make(chan error, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		LeaseDuration: m.flags.leaseDuration,
		RenewDeadline: m.flags.renewDeadline,
		RetryPeriod:   m.flags.retryPeriod,
		WatchDog:      elector,
		Name:          leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				if err := m.run(ctx); err != nil {
					runErr <- err
					stopElecting()
				}
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	elector.SetLeaderElection(le)
	// Run returns when ctx ends or the Lease is lost; the controllers stop with its context.
	le.Run(electCtx)
	select {
	case err := <-runErr:
		return err
	default:
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("leader election lost")
}

// run starts the provider and the controllers and blocks until ctx ends. It does what the
// framework's controller start does for these three: Initialize, SetInformers (the load
// balancer's handlers and informer transforms), the controllers on the shared factory, then
// the factory.
func (m *manager) run(ctx context.Context) error {
	m.provider.Initialize(m.builder, ctx.Done())
	informerClient, err := m.builder.Client("shared-informers")
	if err != nil {
		return err
	}
	// Jittered like the framework's, so the informers do not resync in lock-step.
	factory := informers.NewSharedInformerFactory(informerClient, time.Duration(float64(minResyncPeriod)*(1+rand.Float64())))
	m.provider.SetInformers(factory)
	nodes := factory.Core().V1().Nodes()
	cmMetrics := controllersmetrics.NewControllerManagerMetrics(eventSource)
	controllersmetrics.Register()

	// Both node controllers act as the framework's "node-controller" client (they share its
	// ClusterRole upstream), each with a rate limiter of its own.
	nodeClient, err := m.builder.Client("node-controller")
	if err != nil {
		return err
	}
	nodeCtrl, err := nodecontroller.NewCloudNodeController(nodes, nodeClient, m.provider, m.flags.nodeStatusFrequency, nodeSyncs, nodeSyncs)
	if err != nil {
		return fmt.Errorf("cloud-node controller: %w", err)
	}
	lifecycleClient, err := m.builder.Client("node-controller")
	if err != nil {
		return err
	}
	lifecycleCtrl, err := nodelifecyclecontroller.NewCloudNodeLifecycleController(nodes, lifecycleClient, m.provider, m.flags.nodeMonitorPeriod)
	if err != nil {
		return fmt.Errorf("cloud-node-lifecycle controller: %w", err)
	}
	serviceClient, err := m.builder.Client("service-controller")
	if err != nil {
		return err
	}
	serviceEvents, err := m.builder.Client("service-controller-events")
	if err != nil {
		return err
	}
	// The service controller reads no feature gate (k8s.io/cloud-provider v0.36.6 only takes
	// one), so none is given.
	serviceCtrl, err := servicecontroller.New(m.provider, eventsApart{serviceClient, serviceEvents.CoreV1()},
		factory.Core().V1().Services(), nodes, m.cfg.ClusterName, nil)
	if err != nil {
		return fmt.Errorf("service controller: %w", err)
	}

	go nodeCtrl.RunWithContext(ctx, cmMetrics)
	go lifecycleCtrl.Run(ctx, cmMetrics)
	go serviceCtrl.Run(ctx, m.flags.serviceSyncs, cmMetrics)
	klog.InfoS("Started cloud controllers", "controllers", controllers, "serviceSyncs", m.flags.serviceSyncs,
		"nodeMonitorPeriod", m.flags.nodeMonitorPeriod, "nodeStatusUpdateFrequency", m.flags.nodeStatusFrequency,
		"kubeAPIQPS", strconv.FormatFloat(float64(m.flags.tenantQPS), 'f', -1, 32), "kubeAPIBurst", m.flags.tenantBurst)
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

// eventsApart is a clientset whose core/v1 Events go through another client, and so another
// rate limiter. The service controller writes three Events per Service (Ensuring, Ensured and,
// without Nodes, UnAvailableLoadBalancer) and one finalizer patch through one client: sharing a
// token bucket, a burst's finalizer patches — each Service's first step — queued behind the
// Events of the Services before it.
type eventsApart struct {
	kubernetes.Interface
	events typedcorev1.EventsGetter
}

func (c eventsApart) CoreV1() typedcorev1.CoreV1Interface {
	return coreEventsApart{CoreV1Interface: c.Interface.CoreV1(), events: c.events}
}

type coreEventsApart struct {
	typedcorev1.CoreV1Interface
	events typedcorev1.EventsGetter
}

func (c coreEventsApart) Events(namespace string) typedcorev1.EventInterface {
	return c.events.Events(namespace)
}
