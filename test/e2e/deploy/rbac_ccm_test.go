package deploy_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

const (
	ccmInfraNS  = "deploy-rbac-ccm"
	ccmTenantNS = "deploy-rbac" // tenant namespace of the LoadBalancer Services
	ccmLeaseNS  = "kube-system" // the tenant chart's release namespace = the ccm's Lease namespace
	ccmPool     = "deploy-rbac"
	ccmPoolCIDR = "192.0.2.0/28"
	leaseName   = "cloud-controller-manager"
	taintUninit = "node.cloudprovider.kubernetes.io/uninitialized"
	lbClass     = "tenantcloud.io/deploy-rbac"
	haltedVM    = "halted" // a VM of the cluster that is stopped
)

// TestCCMChartRBAC runs the real ccm binary with the chart's rendered args and config, as the
// management chart's ServiceAccount (its Role, and the node-zones ClusterRole) and the tenant
// chart's ccm ServiceAccount (its ClusterRole and Lease Role), and checks its scenarios: leader
// election, node initialisation (addresses, instance type, zone from the infra node), a
// LoadBalancer getting a MetalLB address, ETP=Local endpoints mirrored, a port change, the
// LoadBalancer's deletion, and the Node of a vanished VM deleted. Then it removes each
// permission of the four roles in turn and records which named scenario fails.
func TestCCMChartRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mgmt, tenant := env.Management.Client, env.Tenant.Client
	createNamespace(t, ctx, mgmt, ccmInfraNS)
	createNamespace(t, ctx, tenant, ccmTenantNS)
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": ccmPool},
		"spec":     map[string]any{"addresses": []any{ccmPoolCIDR}, "autoAssign": false},
	}}
	must(t, mgmt.Create(ctx, pool))
	for _, o := range []client.Object{
		capi.NewCluster(ccmInfraNS, simCluster),
		capi.NewKubevirtMachineTemplate(ccmInfraNS, "worker", simCluster, 2, "2Gi"),
		capi.NewMachineDeployment(ccmInfraNS, "workers", simCluster, "worker", 1),
		haltedVMOf(ccmInfraNS, simCluster, haltedVM),
	} {
		must(t, mgmt.Create(ctx, o))
	}

	mobjs := render(t, "tenantcloud", ccmInfraNS,
		"clusterName="+simCluster,
		"config.loadBalancer.allowedPools={"+ccmPool+"}",
		"ccm.nodeZones=true",
		"ccm.loadBalancerClass="+lbClass,
		"csiController.enabled=false", // no storage class needed for a ccm-only install
		"autoscaler.enabled=false",
	)
	tobjs := render(t, "tenantcloud-tenant", ccmLeaseNS, "clusterName="+simCluster, "infraNamespace="+ccmInfraNS,
		"tenantRBAC.autoscalerProvider=false")
	name := release + "-ccm"
	mRole, mUser := bindChartRole(t, ctx, env.Management, "management", ccmInfraNS, mobjs, "Role", name)
	zones, _ := bindChartRole(t, ctx, env.Management, "management", ccmInfraNS, mobjs, "ClusterRole", "tenantcloud-"+ccmInfraNS+"-"+name)
	tRole, tUser := bindChartRole(t, ctx, env.Tenant, "tenant", ccmLeaseNS, tobjs, "ClusterRole", "tenantcloud-"+ccmLeaseNS+"-"+name)
	leases, _ := bindChartRole(t, ctx, env.Tenant, "tenant", ccmLeaseNS, tobjs, "Role", name)
	if mRole.user != zones.user || tRole.user != leases.user {
		t.Fatalf("the roles of one cluster bind different identities: %s/%s, %s/%s", mRole.user, zones.user, tRole.user, leases.user)
	}

	dir := t.TempDir()
	cfg := localConfig(t, mobjs, dir, mUser.Kubeconfig, tUser.Kubeconfig)
	args := chartrender.LocalArgs(containerArgs(t, mobjs, "Deployment", name, "ccm"), map[string]string{
		"--config":               cfg,
		"--metrics-bind-address": "0", // the pod's port would clash with other processes here
		// How often NotReady Nodes are checked against their VMs; the scenario of a vanished
		// VM waits for it.
		"--node-monitor-period": "1s",
	})
	if !slices.Contains(args, "--leader-elect=true") || !slices.Contains(args, "--node-zones=true") {
		t.Fatalf("rendered ccm args %v: want leader election and node zones", args)
	}
	bin := filepath.Join(programs(t), "ccm")

	worker := waitWorkerNode(t, ctx)
	t.Logf("tenant worker %s (VM %s) registered; ccm args %v", worker.Name, worker.Spec.ProviderID, args)

	runs := 0
	var svc *corev1.Service
	var started time.Time
	p := &proof{
		grants:   []*grant{mRole, zones, tRole, leases},
		clusters: []*harness.Cluster{env.Management, env.Tenant},
		start: func(ctx context.Context) (*component, error) {
			runs++
			svc, started = nil, time.Now()
			return startBinary(dir, "ccm", bin, args...)
		},
		reset: func(ctx context.Context) error { return resetCCMWorld(ctx, worker.Name) },
	}
	p.scenarios = []scenario{
		{"Start: leader Lease acquired", func(ctx context.Context, c *component) error {
			return c.await(ctx, "Lease "+ccmLeaseNS+"/"+leaseName+" held", func(ctx context.Context) (bool, error) {
				l := &coordinationv1.Lease{}
				if err := tenant.Get(ctx, client.ObjectKey{Namespace: ccmLeaseNS, Name: leaseName}, l); err != nil {
					return false, client.IgnoreNotFound(err)
				}
				return ptr.Deref(l.Spec.HolderIdentity, "") != "" && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(started.Add(-time.Second)), nil
			})
		}},
		{"Node initialised (taint lifted, addresses, instance type, zone)", func(ctx context.Context, c *component) error {
			return c.await(ctx, "worker "+worker.Name+" initialised", func(ctx context.Context) (bool, error) {
				n := &corev1.Node{}
				if err := tenant.Get(ctx, client.ObjectKey{Name: worker.Name}, n); err != nil {
					return false, err
				}
				return !hasTaint(n, taintUninit) && len(n.Status.Addresses) > 0 &&
					n.Labels[corev1.LabelInstanceTypeStable] != "" && n.Labels[corev1.LabelTopologyZone] != "", nil
			})
		}},
		{"LoadBalancer gets a MetalLB address (IPAssigned Event)", func(ctx context.Context, c *component) error {
			svc = &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ccmTenantNS, Name: "lb-" + strconv.Itoa(runs)},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
					Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
			}
			if err := tenant.Create(ctx, svc); err != nil {
				return err
			}
			return c.await(ctx, "tenant Service address and IPAssigned Event", func(ctx context.Context) (bool, error) {
				if err := tenant.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
					return false, err
				}
				if len(svc.Status.LoadBalancer.Ingress) == 0 {
					return false, nil
				}
				return tenantEvent(ctx, svc, loadbalancer.ReasonIPAssigned)
			})
		}},
		{"infra Service owned by the tenant's Cluster (garbage-collected with it)", func(ctx context.Context, c *component) error {
			name, err := loadbalancer.InfraServiceName(svc.UID)
			if err != nil {
				return err
			}
			return ownedByCluster(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ccmInfraNS, Name: name}})
		}},
		{"ETP=Local endpoints mirrored to infra EndpointSlices", func(ctx context.Context, c *component) error {
			if err := updateService(ctx, svc, func(s *corev1.Service) {
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}); err != nil {
				return err
			}
			sl := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: ccmTenantNS, Name: svc.Name + "-eps", Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "e2e.tenantcloud.io"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.100.0.1"}, NodeName: ptr.To(worker.Name),
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			}
			if err := tenant.Create(ctx, sl); err != nil {
				return err
			}
			infraName, err := loadbalancer.InfraServiceName(svc.UID)
			if err != nil {
				return err
			}
			return c.await(ctx, "infra EndpointSlice of "+infraName, func(ctx context.Context) (bool, error) {
				var list discoveryv1.EndpointSliceList
				if err := mgmt.List(ctx, &list, client.InNamespace(ccmInfraNS), client.MatchingLabels{discoveryv1.LabelServiceName: infraName}); err != nil {
					return false, err
				}
				for _, s := range list.Items {
					if len(s.Endpoints) > 0 {
						return true, nil
					}
				}
				return false, nil
			})
		}},
		{"LoadBalancer port added (infra Service and EndpointSlice updated)", func(ctx context.Context, c *component) error {
			if err := updateService(ctx, svc, func(s *corev1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
			}); err != nil {
				return err
			}
			infraName, err := loadbalancer.InfraServiceName(svc.UID)
			if err != nil {
				return err
			}
			return c.await(ctx, "infra Service and EndpointSlice with port 443's node port", func(ctx context.Context) (bool, error) {
				is, err := infraService(ctx, svc)
				if err != nil || is == nil || len(is.Spec.Ports) != 2 {
					return false, err
				}
				var list discoveryv1.EndpointSliceList
				if err := mgmt.List(ctx, &list, client.InNamespace(ccmInfraNS), client.MatchingLabels{discoveryv1.LabelServiceName: infraName}); err != nil {
					return false, err
				}
				return slices.ContainsFunc(list.Items, func(s discoveryv1.EndpointSlice) bool { return len(s.Ports) == 2 }), nil
			})
		}},
		{"LoadBalancer deleted (infra Service gone, finalizer lifted)", func(ctx context.Context, c *component) error {
			if err := tenant.Delete(ctx, svc); err != nil {
				return err
			}
			return c.await(ctx, "tenant and infra Service gone", func(ctx context.Context) (bool, error) {
				return serviceGone(ctx, svc)
			})
		}},
		{"Service of the ccm's loadBalancerClass (own finalizer, address, cleanup)", func(ctx context.Context, c *component) error {
			cs := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ccmTenantNS, Name: "class-" + strconv.Itoa(runs)},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(lbClass),
					Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
			}
			if err := tenant.Create(ctx, cs); err != nil {
				return err
			}
			if err := c.await(ctx, "class Service finalizer and address", func(ctx context.Context) (bool, error) {
				if err := tenant.Get(ctx, client.ObjectKeyFromObject(cs), cs); err != nil {
					return false, err
				}
				return slices.Contains(cs.Finalizers, loadbalancer.Finalizer) && len(cs.Status.LoadBalancer.Ingress) > 0, nil
			}); err != nil {
				return err
			}
			if err := tenant.Delete(ctx, cs); err != nil {
				return err
			}
			return c.await(ctx, "class Service and its infra Service gone", func(ctx context.Context) (bool, error) {
				return serviceGone(ctx, cs)
			})
		}},
		{"Node of a stopped VM tainted shutdown", func(ctx context.Context, c *component) error {
			n, err := notReadyNode(ctx, "stopped-"+strconv.Itoa(runs), haltedVM)
			if err != nil {
				return err
			}
			return c.await(ctx, "shutdown taint on "+n.Name, func(ctx context.Context) (bool, error) {
				if err := tenant.Get(ctx, client.ObjectKeyFromObject(n), n); err != nil {
					return false, err
				}
				return hasTaint(n, cloudShutdownTaint), nil
			})
		}},
		{"Node of a vanished VM deleted", func(ctx context.Context, c *component) error {
			ghost, err := notReadyNode(ctx, "ghost-"+strconv.Itoa(runs), "ghost-"+strconv.Itoa(runs))
			if err != nil {
				return err
			}
			return c.await(ctx, "Node "+ghost.Name+" deleted", func(ctx context.Context) (bool, error) {
				err := tenant.Get(ctx, client.ObjectKeyFromObject(ghost), &corev1.Node{})
				return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
			})
		}},
	}
	p.run(t, ctx)
}

// cloudShutdownTaint is what the node-lifecycle controller puts on a Node whose instance is
// shut down.
const cloudShutdownTaint = "node.cloudprovider.kubernetes.io/shutdown"

// notReadyNode creates tenant Node name for VM vm whose kubelet stopped reporting, as the
// node-lifecycle controller sees a Node whose VM stopped or vanished.
func notReadyNode(ctx context.Context, name, vm string) (*corev1.Node, error) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{ProviderID: infra.ProviderIDPrefix + vm}}
	if err := env.Tenant.Client.Create(ctx, n); err != nil {
		return nil, err
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "NodeStatusUnknown"}}
	return n, env.Tenant.Client.Status().Update(ctx, n)
}

// haltedVMOf is a worker VM of cluster as CAPK creates it, stopped.
func haltedVMOf(ns, cluster, name string) *kubevirtv1.VirtualMachine {
	vm := fixture.VM(ns, cluster, name, "")
	vm.Spec.RunStrategy = ptr.To(kubevirtv1.RunStrategyHalted)
	return vm
}

// waitWorkerNode waits for the tenant Node of the proof's MachineDeployment.
func waitWorkerNode(t *testing.T, ctx context.Context) *corev1.Node {
	t.Helper()
	var node *corev1.Node
	err := waitFor(ctx, "the worker Node registers", func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		if err := env.Tenant.Client.List(ctx, &nodes); err != nil {
			return false, err
		}
		for i, n := range nodes.Items {
			if strings.HasPrefix(n.Annotations[capi.AnnotationSimVMI], ccmInfraNS+"/") {
				node = &nodes.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	must(t, err)
	return node
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

func updateService(ctx context.Context, svc *corev1.Service, mutate func(*corev1.Service)) error {
	c := env.Tenant.Client
	return waitFor(ctx, "updating Service "+svc.Name, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return false, err
		}
		mutate(svc)
		err := c.Update(ctx, svc)
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return err == nil, err
	})
}

// infraService returns the infra Service of tenant Service svc, nil if there is none.
func infraService(ctx context.Context, svc *corev1.Service) (*corev1.Service, error) {
	name, err := loadbalancer.InfraServiceName(svc.UID)
	if err != nil {
		return nil, err
	}
	is := &corev1.Service{}
	err = env.Management.Client.Get(ctx, client.ObjectKey{Namespace: ccmInfraNS, Name: name}, is)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return is, err
}

// serviceGone reports whether tenant Service svc and its infra Service are both gone.
func serviceGone(ctx context.Context, svc *corev1.Service) (bool, error) {
	is, err := infraService(ctx, svc)
	if err != nil || is != nil {
		return false, err
	}
	err = env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
	return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
}

func tenantEvent(ctx context.Context, obj client.Object, reason string) (bool, error) {
	var events corev1.EventList
	if err := env.Tenant.Client.List(ctx, &events, client.InNamespace(obj.GetNamespace())); err != nil {
		return false, err
	}
	return slices.ContainsFunc(events.Items, func(e corev1.Event) bool {
		return e.InvolvedObject.UID == obj.GetUID() && e.Reason == reason
	}), nil
}

// resetCCMWorld undoes, as admin, what a ccm run did or left half-done, so the next run meets
// the same world: the Lease, the LoadBalancer Services (tenant and infra) and EndpointSlices,
// the ghost Nodes, and the worker Node back to uninitialised.
func resetCCMWorld(ctx context.Context, worker string) error {
	mgmt, tenant := env.Management.Client, env.Tenant.Client
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ccmLeaseNS, Name: leaseName}}
	if err := tenant.Delete(ctx, lease); client.IgnoreNotFound(err) != nil {
		return err
	}
	var svcs corev1.ServiceList
	if err := tenant.List(ctx, &svcs, client.InNamespace(ccmTenantNS)); err != nil {
		return err
	}
	for i := range svcs.Items {
		s := &svcs.Items[i]
		if len(s.Finalizers) > 0 {
			s.Finalizers = nil
			if err := tenant.Update(ctx, s); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("lifting finalizers of %s: %w", s.Name, err)
			}
		}
		if err := tenant.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	if err := tenant.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(ccmTenantNS)); err != nil {
		return err
	}
	if err := mgmt.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(ccmInfraNS)); err != nil {
		return err
	}
	var infraSvcs corev1.ServiceList
	if err := mgmt.List(ctx, &infraSvcs, client.InNamespace(ccmInfraNS)); err != nil {
		return err
	}
	for i := range infraSvcs.Items {
		if err := mgmt.Delete(ctx, &infraSvcs.Items[i]); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	var nodes corev1.NodeList
	if err := tenant.List(ctx, &nodes); err != nil {
		return err
	}
	for i := range nodes.Items {
		if strings.HasPrefix(nodes.Items[i].Name, "ghost-") || strings.HasPrefix(nodes.Items[i].Name, "stopped-") {
			if err := tenant.Delete(ctx, &nodes.Items[i]); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	return waitFor(ctx, "worker "+worker+" reset to uninitialised", func(ctx context.Context) (bool, error) {
		n := &corev1.Node{}
		if err := tenant.Get(ctx, client.ObjectKey{Name: worker}, n); err != nil {
			return false, err
		}
		if !hasTaint(n, taintUninit) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: taintUninit, Value: "true", Effect: corev1.TaintEffectNoSchedule})
		}
		for _, l := range []string{corev1.LabelInstanceTypeStable, corev1.LabelInstanceType, corev1.LabelTopologyZone,
			corev1.LabelTopologyRegion, corev1.LabelFailureDomainBetaZone, corev1.LabelFailureDomainBetaRegion} {
			delete(n.Labels, l)
		}
		if err := tenant.Update(ctx, n); apierrors.IsConflict(err) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		n.Status.Addresses = nil
		err := tenant.Status().Update(ctx, n)
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return err == nil, err
	})
}

// waitFor polls cond until it holds or ctx ends; for the test's own steps, not the component's.
func waitFor(ctx context.Context, what string, cond func(ctx context.Context) (bool, error)) error {
	var last error
	err := waitPoll(ctx, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			last = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w (last error: %v)", what, err, last)
	}
	return nil
}
