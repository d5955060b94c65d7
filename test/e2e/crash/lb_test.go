package crash

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/informers"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud"
	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/e2e/tenantlb"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

const (
	lbNS       = "crash-lb" // infra namespace and tenant namespace alike
	lbPool     = "crash-public"
	lbCIDR     = "192.0.2.0/27"
	lbWorker   = "crash-lb-w1"
	lbFinalize = "service.kubernetes.io/load-balancer-cleanup" // the upstream service controller's
)

// lbWorld is the ccm's tenant: one worker VM and its tenant Node for
// ETP=Local endpoints, a granted MetalLB pool, and the tenant namespace.
type lbWorld struct {
	t     *testing.T
	scope infra.Scope
	cfg   *config.Config
	node  string // the tenant worker Node
}

// TestCCMLoadBalancerCrash kills the ccm — our provider plus the upstream service controller,
// in-process — after each API write of a LoadBalancer's creation and deletion (finalizer and
// status patches on the tenant Service, infra Service and EndpointSlice writes) and restarts
// it: the tenant Service ends with its address (or gone) and the infra side holds exactly the
// Service and EndpointSlices it should, none orphaned.
func TestCCMLoadBalancerCrash(t *testing.T) {
	// The three components' scenarios share nothing but the simulator and run side by side.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := &lbWorld{t: t, scope: infra.Scope{Namespace: lbNS, ClusterName: cluster}, cfg: &config.Config{
		ClusterName: cluster, InfraNamespace: lbNS,
		LoadBalancer: config.LoadBalancer{AllowedPools: []string{lbPool}, DefaultPool: lbPool, AllowedIPRanges: []string{lbCIDR}},
	}}
	w.setup(ctx)

	for _, tc := range []struct {
		op    string
		local bool
	}{{"create (ETP=Cluster)", false}, {"create (ETP=Local)", true}} {
		t.Run(tc.op, func(t *testing.T) {
			crashAtEveryStep(t, "ccm", "LoadBalancer "+tc.op, func(t *testing.T, n int) crashRun {
				name := fmt.Sprintf("create-%v-%d", tc.local, n)
				if tc.local {
					w.tenantSlice(t, name)
				}
				var uid string
				return w.run(func(ctx context.Context) error {
					svc := lbService(name, tc.local)
					if err := env.Tenant.Client.Create(ctx, svc); err != nil {
						return err
					}
					uid = string(svc.UID)
					return nil
				}, func(ctx context.Context) (missing, leaked []string) { return w.compare(ctx, name, uid, tc.local) })
			})
		})
	}
	t.Run("delete (ETP=Local)", func(t *testing.T) {
		crashAtEveryStep(t, "ccm", "LoadBalancer delete (ETP=Local)", func(t *testing.T, n int) crashRun {
			name := fmt.Sprintf("delete-%d", n)
			w.tenantSlice(t, name)
			svc := lbService(name, true)
			w.converge(t, func(ctx context.Context) error { return env.Tenant.Client.Create(ctx, svc) },
				func(ctx context.Context) (missing, leaked []string) {
					return w.compare(ctx, name, string(svc.UID), true)
				})
			return w.run(func(ctx context.Context) error { return env.Tenant.Client.Delete(ctx, svc) },
				func(ctx context.Context) (missing, leaked []string) { return w.compare(ctx, name, "", true) })
		})
	})
}

// setup creates the pool, the namespaces, a running worker VM and its tenant Node (as CAPK and
// the VM's kubelet would: providerID kubevirt://<vm>).
func (w *lbWorld) setup(ctx context.Context) {
	t := w.t
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": lbPool},
		"spec":     map[string]any{"addresses": []any{lbCIDR}, "autoAssign": true},
	}}
	for _, obj := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lbNS}}, pool} {
		if err := env.Management.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	w.node = lbWorker
	if err := fixture.CreateRunningVM(ctx, env.Management.Client, lbNS, cluster, lbWorker, ""); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lbNS}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: lbWorker}, Spec: corev1.NodeSpec{ProviderID: infra.ProviderIDPrefix + lbWorker}},
	} {
		if err := env.Tenant.Client.Create(ctx, obj); err != nil {
			t.Fatalf("creating tenant %T %s: %v", obj, obj.GetName(), err)
		}
	}
}

func lbService(name string, local bool) *corev1.Service {
	svc := tenantlb.New(lbNS, name)
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	return svc
}

// tenantSlice writes the tenant EndpointSlice of Service name, as the tenant's EndpointSlice
// controller would: one ready pod on the worker Node.
func (w *lbWorld) tenantSlice(t *testing.T, name string) {
	t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: lbNS, Name: name + "-pods", Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "e2e.tenantcloud.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.100.0.1"}, NodeName: ptr.To(w.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	if err := env.Tenant.Client.Create(context.Background(), sl); err != nil {
		t.Fatal(err)
	}
}

// startCCM runs what the ccm binary runs for LoadBalancers — the provider (Initialize,
// SetInformers) and the upstream service controller on a shared informer factory — with every
// request to either cluster passing through sw. stop ends it as a killed process ends.
func (w *lbWorld) startCCM(sw *Switch) (stop func(), err error) {
	p, err := cloud.NewWithInfraConfig(w.cfg, cloud.Options{}, sw.Config(env.Management.Config))
	if err != nil {
		return nil, err
	}
	// Every client the builder hands out uses the switched config (so passes through sw).
	b := cloud.ClientBuilder{RESTConfig: sw.Config(env.Tenant.Config)}
	kc, err := b.Client("service-controller")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.Initialize(b, ctx.Done())
	factory := informers.NewSharedInformerFactory(kc, 0)
	p.SetInformers(factory)
	// The service controller is given a Node informer that sees no Node. Its node worker
	// (syncNodes → serviceCache.allServices) reads cachedService.state, which its service
	// workers write without the cache's lock (k8s.io/cloud-provider v0.36.6
	// controllers/service/controller.go:339 vs :503): an upstream data race that -race reports
	// as soon as a Node event meets a Service sync. With no Node there is no node sync; our
	// provider ignores the node list anyway (workers are selected by label in the infra cluster)
	// and reads tenant Nodes from factory, which sees them all.
	noNodes := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "metadata.name=crash-test-no-such-node"
	}))
	sc, err := servicecontroller.New(p, kc, factory.Core().V1().Services(), noNodes.Core().V1().Nodes(), cluster, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	factory.Start(ctx.Done())
	noNodes.Start(ctx.Done())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc.Run(ctx, 2, controllersmetrics.NewControllerManagerMetrics("crash-ccm"))
	}()
	return func() {
		cancel()
		<-done
		factory.Shutdown()
		noNodes.Shutdown()
	}, nil
}

// run is the crashRun of a tenant action the ccm reacts to: the victim ccm runs while the
// tenant acts, until the world converges or the ccm is killed; recovery is a fresh ccm
// running until the world converges (the service controller re-queues what it finds).
func (w *lbWorld) run(act func(context.Context) error, check func(context.Context) (missing, leaked []string)) crashRun {
	return crashRun{
		victim: func(ctx context.Context, sw *Switch) error {
			stop, err := w.startCCM(sw)
			if err != nil {
				return err
			}
			defer stop()
			if err := act(ctx); err != nil {
				return fmt.Errorf("tenant action: %w", err)
			}
			err = eventually(ctx, runTimeout, func(ctx context.Context) error {
				if sw.Dead() {
					return nil
				}
				if missing, leaked := check(ctx); len(missing)+len(leaked) > 0 {
					return fmt.Errorf("missing %v, leaked %v", missing, leaked)
				}
				return nil
			})
			if sw.Dead() {
				return ErrKilled
			}
			return err
		},
		recover: func(ctx context.Context, sw *Switch) error {
			stop, err := w.startCCM(sw)
			if err != nil {
				return err
			}
			defer stop()
			return eventually(ctx, recoverBound, func(ctx context.Context) error {
				if missing, leaked := check(ctx); len(missing)+len(leaked) > 0 {
					return fmt.Errorf("missing %v, leaked %v", missing, leaked)
				}
				return nil
			})
		},
		check:   check,
		cleanup: w.cleanup,
	}
}

// converge runs act with a healthy ccm until check passes: the start state of a run.
func (w *lbWorld) converge(t *testing.T, act func(context.Context) error, check func(context.Context) (missing, leaked []string)) {
	t.Helper()
	r := w.run(act, check)
	if err := phase(func(ctx context.Context) error { return r.victim(ctx, NewSwitch(0, nil)) }); err != nil {
		t.Fatal(err)
	}
}

// compare checks the tenant's load balancers against the desired state: tenant Service name
// with uid served (uid "": gone). Served means the finalizer and an address on the tenant
// Service, the owned infra Service for that uid with the same address and, for ETP=Local, an
// owned infra EndpointSlice for it. Every other owned infra Service or EndpointSlice is leaked.
func (w *lbWorld) compare(ctx context.Context, name, uid string, local bool) (missing, leaked []string) {
	svc := &corev1.Service{}
	err := env.Tenant.Client.Get(ctx, client.ObjectKey{Namespace: lbNS, Name: name}, svc)
	switch {
	case uid == "" && err == nil:
		missing = append(missing, fmt.Sprintf("tenant Service %s gone (finalizers %v)", name, svc.Finalizers))
	case uid == "" && apierrors.IsNotFound(err):
	case err != nil:
		return []string{err.Error()}, nil
	}
	var ip string
	if uid != "" {
		if !hasString(svc.Finalizers, lbFinalize) {
			missing = append(missing, "finalizer on tenant Service "+name)
		}
		if in := svc.Status.LoadBalancer.Ingress; len(in) == 1 && in[0].IP != "" {
			ip = in[0].IP
		} else {
			missing = append(missing, fmt.Sprintf("one address on tenant Service %s (has %v)", name, in))
		}
	}
	owned := client.MatchingLabels(w.scope.OwnedLabels(loadbalancer.Component))
	var svcs corev1.ServiceList
	if err := env.Management.Client.List(ctx, &svcs, client.InNamespace(lbNS), owned); err != nil {
		return append(missing, err.Error()), nil
	}
	found := false
	for _, s := range svcs.Items {
		if uid != "" && s.Labels[loadbalancer.LabelServiceUID] == uid {
			found = true
			if in := s.Status.LoadBalancer.Ingress; ip != "" && (len(in) != 1 || in[0].IP != ip) {
				missing = append(missing, fmt.Sprintf("infra Service %s with address %s (has %v)", s.Name, ip, in))
			}
			continue
		}
		leaked = append(leaked, fmt.Sprintf("infra Service %s (for %s/%s)", s.Name,
			s.Labels[loadbalancer.LabelServiceName], s.Labels[loadbalancer.LabelServiceUID]))
	}
	if uid != "" && !found {
		missing = append(missing, "infra Service for tenant Service "+name)
	}
	var slices discoveryv1.EndpointSliceList
	if err := env.Management.Client.List(ctx, &slices, client.InNamespace(lbNS), owned); err != nil {
		return append(missing, err.Error()), leaked
	}
	sliced := false
	for _, sl := range slices.Items {
		if uid != "" && local && sl.Labels[loadbalancer.LabelServiceUID] == uid {
			sliced = sliced || len(sl.Endpoints) > 0
			continue
		}
		leaked = append(leaked, "infra EndpointSlice "+sl.Name)
	}
	if uid != "" && local && !sliced {
		missing = append(missing, "infra EndpointSlice with an endpoint for tenant Service "+name)
	}
	return missing, leaked
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cleanup deletes every tenant Service and EndpointSlice of the namespace with a healthy ccm
// running and waits until the infra side is empty.
func (w *lbWorld) cleanup(ctx context.Context) error {
	stop, err := w.startCCM(NewSwitch(0, nil))
	if err != nil {
		return err
	}
	defer stop()
	var svcs corev1.ServiceList
	if err := env.Tenant.Client.List(ctx, &svcs, client.InNamespace(lbNS)); err != nil {
		return err
	}
	for i := range svcs.Items {
		if err := env.Tenant.Client.Delete(ctx, &svcs.Items[i]); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	if err := env.Tenant.Client.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(lbNS)); err != nil {
		return err
	}
	return eventually(ctx, 20*time.Second, func(ctx context.Context) error {
		var left corev1.ServiceList
		if err := env.Tenant.Client.List(ctx, &left, client.InNamespace(lbNS)); err != nil {
			return err
		}
		if len(left.Items) > 0 {
			return fmt.Errorf("%d tenant Services left", len(left.Items))
		}
		if missing, leaked := w.compare(ctx, "none", "", false); len(missing)+len(leaked) > 0 {
			return fmt.Errorf("after cleanup: %v %v", missing, leaked)
		}
		return nil
	})
}
