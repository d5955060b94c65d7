package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/install"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
	"github.com/tenantcloud/tenantcloud/test/sim"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

// tenantControllers are the tenant's kube-controller-manager controllers the stories need: pod
// ServiceAccounts and their CA, Node lifecycle (the not-ready taint), DaemonSets (csi-node),
// Deployments, the PV binder, attach-detach and protection, garbage collection, and the pod
// garbage collector, which deletes the pods of a Node the cluster-autoscaler removed (the
// csi-node pod of the scaled-down worker would otherwise stay, and helm uninstall's pods never
// go).
var tenantControllers = []string{
	"serviceaccount-controller", "serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
	"node-lifecycle-controller", "daemonset-controller", "deployment-controller", "replicaset-controller",
	"persistentvolume-attach-detach-controller", "persistentvolume-binder-controller",
	"persistentvolume-expander-controller", "persistentvolume-protection-controller",
	"persistentvolumeclaim-protection-controller", "garbage-collector-controller",
	"pod-garbage-collector-controller",
}

// autoscalerValues tune the chart's cluster-autoscaler to decide in seconds, as no operator
// would: the stories should not wait minutes for a scale-down.
var autoscalerValues = map[string]any{"autoscaler": map[string]any{"clusterAutoscaler": map[string]any{"extraArgs": []any{
	"--scan-interval=2s", "--expander=random", "--max-node-provision-time=3m",
	"--scale-down-enabled=true", "--scale-down-delay-after-add=1s", "--scale-down-delay-after-delete=0s",
	"--scale-down-delay-after-failure=1s", "--scale-down-unneeded-time=5s", "--scale-down-unready-time=5s",
	"--node-delete-delay-after-taint=0s", "--unremovable-node-recheck-timeout=1s",
	"--skip-nodes-with-local-storage=false", "--skip-nodes-with-system-pods=false",
}}}}

func (s *sandbox) startControlPlanes(ctx context.Context) error {
	step("starting management and tenant control planes (etcd + kube-apiserver each)")
	env, err := harness.StartWith(ctx, harness.Options{TenantServiceAccounts: true, ManagementServiceAccounts: true})
	if err != nil {
		return err
	}
	s.env = env
	ok("control planes up: management %s, tenant %s", env.Management.Config.Host, env.Tenant.Config.Host)
	if _, err := install.Supported(env); err != nil {
		return fmt.Errorf("%w (make sandbox builds bin/ and the images; the nodes need root)", err)
	}
	if n, err := node.ReapOrphans(); err != nil || n > 0 {
		note("reaped %d network namespaces and cgroups a killed run left (%v)", n, err)
	}
	if _, err := env.StartControllerManager(ctx, env.Management, install.ManagementControllers...); err != nil {
		return fmt.Errorf("management kube-controller-manager: %w", err)
	}
	if _, err := env.StartSchedulerFor(ctx, env.Management); err != nil {
		return fmt.Errorf("management kube-scheduler: %w", err)
	}
	ok("management: real kube-scheduler and kube-controller-manager (Deployments, ServiceAccounts, EndpointSlices, ...)")
	if _, err := env.StartScheduler(ctx); err != nil {
		return fmt.Errorf("tenant kube-scheduler: %w", err)
	}
	if _, err := env.StartControllerManager(ctx, env.Tenant, tenantControllers...); err != nil {
		return fmt.Errorf("tenant kube-controller-manager: %w", err)
	}
	ok("tenant: real kube-scheduler and kube-controller-manager (%d controllers: DaemonSets, Deployments, PV binder, attach-detach, node lifecycle, ...)", len(tenantControllers))
	return nil
}

func (s *sandbox) startSimulator(ctx context.Context) error {
	step("starting simulator: KubeVirt, virt-api, CDI, Cluster API + CAPK, MetalLB controller, guest disks on loop devices")
	si, err := sim.Start(ctx, s.env, sim.Options{
		ClusterName: clusterName, ExternalCloudProvider: true, MetalLB: true, Disks: true, PhaseDelay: phaseDelayFlag,
		Kubelets: s.workers,
	})
	if err != nil {
		return err
	}
	s.sim = si
	ok("simulator running (phase delay %s); Cluster API workers get real kubelet nodes, at most %d at a time", phaseDelayFlag, s.workers.max)
	return nil
}

func (s *sandbox) bin(name string) string { return filepath.Join(s.env.Assets.BinDir, name) }

// startRegistry runs a loopback registry and pushes the images make images built to it, as an
// operator pushes them to theirs (make images PUSH=1), and builds the harness images (pause,
// volprobe) every real node imports.
func (s *sandbox) startRegistry(ctx context.Context) error {
	step("registry: pushing bin/images (make images) to a loopback registry; building the nodes' pause and volprobe images")
	built := make(chan error, 1)
	go func() {
		var err error
		s.nodeImages, err = node.BuildImages(ctx, s.logDir)
		built <- err
	}()
	var err error
	if s.images, err = install.PushImages(ctx, s.env, s.logDir); err != nil {
		return errors.Join(err, <-built)
	}
	if err := <-built; err != nil {
		return err
	}
	ok("registry %s holds the %d images make images built", s.images.Registry.Addr, len(s.images.Refs))
	return nil
}

// startManagementNode starts the real management node the management chart's pods run on.
func (s *sandbox) startManagementNode(ctx context.Context) error {
	step("management: a real node %s joins the management cluster (kubelet, containerd, kube-proxy), for the management chart's pods", mgmtNode)
	t0 := time.Now()
	var err error
	if s.mgmt, err = node.Start(ctx, s.env, node.Options{Cluster: s.env.Management, Name: mgmtNode,
		NodeIP: netip.MustParseAddr("10.87.0.2"), PodCIDR: netip.MustParsePrefix("10.87.1.0/24"),
		Images: []string{s.nodeImages}, Registries: []string{s.images.Registry.Addr}}); err != nil {
		return err
	}
	ok("management node %s running (took %s)", mgmtNode, since(t0))
	return nil
}

// createTenantCluster creates the tenant's Cluster API objects, as an operator does before
// installing tenantcloud, starts the management node while the worker VMs boot, and waits
// until the two workers' real kubelets registered their Nodes (uninitialised: no ccm runs
// yet).
func (s *sandbox) createTenantCluster(ctx context.Context) error {
	mgmt := s.env.Management.Client
	if err := mgmt.Create(ctx, objectNamespace(infraNS)); err != nil {
		return fmt.Errorf("creating namespace %s: %w", infraNS, err)
	}
	md := capi.NewMachineDeployment(infraNS, mdName, clusterName, mdName, 2)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "2", autoscaler.AnnotationMaxSize: strconv.Itoa(maxWorkers)}
	step("management: Cluster %s/%s, KubevirtMachineTemplate (%d cores as this machine has, 4Gi), MachineDeployment %s (2 replicas, autoscaled 2..%d)",
		infraNS, clusterName, workerCores(), mdName, maxWorkers)
	s.clusterCreated = time.Now()
	for _, obj := range []client.Object{
		capi.NewCluster(infraNS, clusterName),
		capi.NewKubevirtMachineTemplate(infraNS, mdName, clusterName, int64(workerCores()), "4Gi"),
		md,
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	if err := s.startManagementNode(ctx); err != nil {
		return err
	}
	return poll(ctx, "2 worker Nodes registered", func(ctx context.Context) (bool, error) {
		var list corev1.NodeList
		if err := s.env.Tenant.Client.List(ctx, &list); err != nil {
			return false, err
		}
		n := 0
		for _, nd := range list.Items {
			if s.workers.node(nd.Name) != nil {
				s.reportRegistered(&nd)
				n++
			}
		}
		return n >= 2, nil
	})
}

// installCharts installs both charts with helm as an operator does, with the operator's values
// (deploy/examples) and the images from the registry, and prints every chart pod Running with
// its image; then waits until the ccm pod initialised the workers and csi-node runs on them.
func (s *sandbox) installCharts(ctx context.Context) error {
	// A pool that exists in the management cluster but is not granted to this tenant.
	other := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": s.sim.MetalLB.Namespace(), "name": otherPool},
		"spec":     map[string]any{"addresses": []any{otherCIDR}, "autoAssign": false},
	}}
	if err := s.env.Management.Client.Create(ctx, other); err != nil {
		return fmt.Errorf("creating IPAddressPool %s: %w", otherPool, err)
	}
	step("helm install %s deploy/charts/tenantcloud -n %s -f %s (management, pods on %s) and deploy/charts/tenantcloud-tenant -n kube-system -f %s (tenant)",
		install.DefaultRelease, infraNS, install.ExampleValues.Management, mgmtNode, install.ExampleValues.Tenant)
	var err error
	s.release, err = install.Install(ctx, s.env, s.sim, install.Options{
		ClusterName: clusterName, Namespace: infraNS, Images: s.images, ManagementNode: mgmtNode,
		Dir: filepath.Join(s.logDir, "install"), ManagementValues: autoscalerValues,
		PoolAddresses: map[string]string{poolName: poolCIDR},
	})
	if err != nil {
		return fmt.Errorf("%w\nmanagement kubelet:\n%s", err, s.mgmt.Log("kubelet", 3000))
	}
	for _, p := range append(append([]corev1.Pod{}, s.release.ManagementPods...), s.release.TenantPods...) {
		var images []string
		for _, c := range p.Spec.Containers {
			images = append(images, c.Name+"="+c.Image)
		}
		sort.Strings(images)
		ok("pod %s/%s Running and Ready on %s: %s", p.Namespace, p.Name, p.Spec.NodeName, strings.Join(images, " "))
	}
	ok("both charts installed; %d pods Running from the registry's images, each the digest bin/images lists (took %s)",
		len(s.release.ManagementPods)+len(s.release.TenantPods), s.release.Took.Round(100*time.Millisecond))
	nodes, err := s.waitNodes(ctx, 2)
	if err != nil {
		return err
	}
	if err := s.waitCSINodes(ctx, nodes); err != nil {
		return err
	}
	ok("tenant cluster up: 2 real worker nodes initialised by the ccm pod, with csi-node, %s after the MachineDeployment was created", since(s.clusterCreated))
	return nil
}

// workerCores is the worker VMs' vCPUs: what a real node here reports, this machine's CPUs.
func workerCores() int { return runtime.NumCPU() }

// reportRegistered prints a Node's registration once.
func (s *sandbox) reportRegistered(nd *corev1.Node) {
	if s.seen["reg/"+nd.Name] {
		return
	}
	s.seen["reg/"+nd.Name] = true
	kind := "real kubelet"
	if s.workers.node(nd.Name) == nil {
		kind = "simulated kubelet"
	}
	ok("Node %s registered by its %s (providerID %s)", nd.Name, kind, nd.Spec.ProviderID)
}

// waitNodes waits for n tenant Nodes backed by VMs that are Ready and initialised by the ccm
// (uninitialized taint gone, addresses set), printing each as it joins.
func (s *sandbox) waitNodes(ctx context.Context, n int) ([]corev1.Node, error) {
	step("waiting for %d worker Node(s): Machine → VM boots → kubelet registers → ccm initialises it", n)
	var ready []corev1.Node
	err := poll(ctx, fmt.Sprintf("%d tenant Node(s) Ready and initialised by the ccm", n), func(ctx context.Context) (bool, error) {
		var list corev1.NodeList
		if err := s.env.Tenant.Client.List(ctx, &list); err != nil {
			return false, err
		}
		ready = ready[:0]
		for _, nd := range list.Items {
			if !strings.HasPrefix(nd.Spec.ProviderID, infra.ProviderIDPrefix) || nd.DeletionTimestamp != nil {
				continue
			}
			s.reportRegistered(&nd)
			if !node.Ready(&nd) || len(nd.Status.Addresses) == 0 {
				continue
			}
			if !s.seen["init/"+nd.Name] {
				s.seen["init/"+nd.Name] = true
				var addrs []string
				for _, a := range nd.Status.Addresses {
					addrs = append(addrs, string(a.Type)+"="+a.Address)
				}
				ok("Node %s Ready, initialised by the ccm: addresses %s, instance-type %q, zone %q region %q (of the infra node running the VM)", nd.Name,
					strings.Join(addrs, " "), nd.Labels[corev1.LabelInstanceTypeStable], nd.Labels[corev1.LabelTopologyZone], nd.Labels[corev1.LabelTopologyRegion])
			}
			ready = append(ready, nd)
		}
		return len(ready) >= n, nil
	})
	return ready, err
}

// waitCSINodes waits until the tenant chart's csi-node DaemonSet pod runs on each of the real
// nodes among nodes and the kubelet there registered the driver, and prints each pod with its
// image (from the registry).
func (s *sandbox) waitCSINodes(ctx context.Context, nodes []corev1.Node) error {
	for _, nd := range nodes {
		if s.workers.node(nd.Name) == nil || s.seen["csi/"+nd.Name] {
			continue
		}
		var pod corev1.Pod
		err := poll(ctx, "csi-node running on "+nd.Name+" with the driver registered", func(ctx context.Context) (bool, error) {
			var pods corev1.PodList
			if err := s.env.Tenant.Client.List(ctx, &pods, client.InNamespace(install.TenantNamespace),
				client.MatchingFields{"spec.nodeName": nd.Name}); err != nil {
				return false, err
			}
			found := false
			for _, p := range pods.Items {
				if strings.HasPrefix(p.Name, install.DefaultRelease+"-csi-node-") && p.Status.Phase == corev1.PodRunning && podReady(&p) {
					pod, found = p, true
				}
			}
			if !found {
				return false, nil
			}
			cn := &storagev1.CSINode{}
			if err := s.env.Tenant.Client.Get(ctx, client.ObjectKey{Name: nd.Name}, cn); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			for _, d := range cn.Spec.Drivers {
				if d.Name == tccsi.DriverName {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return err
		}
		s.seen["csi/"+nd.Name] = true
		ok("pod kube-system/%s Running on %s, image %s (DaemonSet %s-csi-node); driver %s registered with the kubelet", pod.Name, nd.Name,
			pod.Spec.Containers[0].Image, install.DefaultRelease, tccsi.DriverName)
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// componentsAlive fails when a management chart pod stopped being Ready or restarted (a
// crash), naming it.
func (s *sandbox) componentsAlive(ctx context.Context) error {
	if s.release == nil {
		return nil
	}
	var pods corev1.PodList
	if err := s.env.Management.Client.List(ctx, &pods, client.InNamespace(infraNS),
		client.MatchingLabels{"app.kubernetes.io/instance": install.DefaultRelease}); err != nil {
		return err
	}
	for _, p := range pods.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount > 0 {
				return fmt.Errorf("pod %s/%s container %s restarted %d times (logs: %s)", p.Namespace, p.Name, c.Name, c.RestartCount,
					filepath.Join(s.mgmt.Dir, "pod-logs"))
			}
		}
	}
	return nil
}

func objectNamespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}
