package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tenantcloud/tenantcloud/pkg/cloud"
	"github.com/tenantcloud/tenantcloud/pkg/metrics"
)

// ccmFlags are the ccm's own flags: provider options that are not part of the shared tenant
// config, and the few settings of the upstream controllers and leader election an operator
// needs. Everything else is fixed by serve, at the cloud-controller-manager's defaults.
type ccmFlags struct {
	loadBalancerClass string
	nodeZones         bool

	securePort          int
	leaderElect         bool
	leaseDuration       time.Duration
	renewDeadline       time.Duration
	retryPeriod         time.Duration
	leaseNamespace      string
	nodeMonitorPeriod   time.Duration
	nodeStatusFrequency time.Duration
	serviceSyncs        int
	tenantQPS           float32
	tenantBurst         int
	infraQPS            float32
	infraBurst          int
}

func (f *ccmFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.loadBalancerClass, "load-balancer-class", "",
		"a spec.loadBalancerClass the ccm serves besides Services without a class (empty: only those)")
	fs.BoolVar(&f.nodeZones, "node-zones", false,
		"label tenant nodes with the zone and region of the infra node running their VM (needs get on management-cluster Nodes)")
	fs.IntVar(&f.securePort, "secure-port", 0,
		"port of the HTTPS /healthz endpoint (self-signed certificate; metrics are on --metrics-bind-address); 0 disables it")
	fs.BoolVar(&f.leaderElect, "leader-elect", true,
		"elect a leader through a Lease in the tenant cluster before acting (run more than one replica safely)")
	fs.DurationVar(&f.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "leader lease duration")
	fs.DurationVar(&f.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "leader lease renew deadline")
	fs.DurationVar(&f.retryPeriod, "leader-elect-retry-period", 2*time.Second, "leader election retry period")
	fs.StringVar(&f.leaseNamespace, "leader-elect-resource-namespace", "kube-system", "tenant namespace of the leader Lease")
	fs.DurationVar(&f.nodeMonitorPeriod, "node-monitor-period", 5*time.Second,
		"how often the node lifecycle controller checks NotReady nodes against their VMs")
	fs.DurationVar(&f.nodeStatusFrequency, "node-status-update-frequency", 5*time.Minute,
		"how often node addresses are refreshed from the VMs")
	fs.IntVar(&f.serviceSyncs, "concurrent-service-syncs", 2, "LoadBalancer Services synced in parallel")
	// Client-side limits: a burst of Services costs ~4 tenant and ~1 infra request each; the
	// client-go default of 5 QPS would make status latency grow with the burst size.
	fs.Float32Var(&f.tenantQPS, "kube-api-qps", 50, "requests per second to the tenant apiserver")
	fs.IntVar(&f.tenantBurst, "kube-api-burst", 100, "request burst to the tenant apiserver")
	fs.Float32Var(&f.infraQPS, "infra-api-qps", 50, "requests per second to the management apiserver")
	fs.IntVar(&f.infraBurst, "infra-api-burst", 100, "request burst to the management apiserver")
}

func (f *ccmFlags) check() error {
	if f.loadBalancerClass != "" {
		if errs := validation.IsQualifiedName(f.loadBalancerClass); len(errs) > 0 {
			return fmt.Errorf("--load-balancer-class %q: %v", f.loadBalancerClass, errs)
		}
	}
	if f.securePort < 0 || f.securePort > 65535 {
		return fmt.Errorf("--secure-port %d: out of range", f.securePort)
	}
	if f.tenantQPS <= 0 || f.infraQPS <= 0 || f.tenantBurst < 1 || f.infraBurst < 1 {
		return fmt.Errorf("API QPS and burst must be positive")
	}
	if f.serviceSyncs < 1 {
		return fmt.Errorf("--concurrent-service-syncs must be at least 1")
	}
	if f.leaderElect && !(f.retryPeriod < f.renewDeadline && f.renewDeadline < f.leaseDuration) {
		return fmt.Errorf("leader election needs retry period < renew deadline < lease duration")
	}
	return nil
}

func (f *ccmFlags) providerOptions(m *metrics.Metrics) cloud.Options {
	return cloud.Options{LoadBalancerClass: f.loadBalancerClass, NodeZones: f.nodeZones, InfraQPS: f.infraQPS, InfraBurst: f.infraBurst,
		Metrics: m}
}
