// Package chartpods proves the product as deployed: both Helm charts installed by
// test/harness/install from the images `make images` built — the management chart's ccm,
// csi-controller with the real CSI sidecars, autoscaler-provider and cluster-autoscaler as pods
// on one real management node, the tenant chart's csi-node DaemonSet on two real tenant nodes
// (simulated VMs with loop-device disks, the real MetalLB controller) — and then only
// Kubernetes objects as a user makes them: a LoadBalancer Service, a PVC and a pod writing to
// it, a pod that fits no node.
package chartpods

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/install"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
	"github.com/tenantcloud/tenantcloud/test/sim"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

const (
	cluster = "pods"
	infraNS = "tenant-pods"
	// group is the autoscaled MachineDeployment (0..2 workers); runLabel, synced to its Nodes,
	// is what the pending pod selects so only this group can take it.
	group    = "workers"
	runLabel = "node.cluster.x-k8s.io/chartpods"
)

var (
	env *harness.Env
	w   *world
	// unsupported says why this machine cannot run the suite; need is its harness.Require need.
	unsupported error
	need        string
)

// world is what the tests share.
type world struct {
	dir     string
	sim     *sim.Sim
	images  *install.Images
	mgmt    *node.Node
	nodes   []*node.Node
	release *install.Release
	// nodesReady: first node start → every tenant node initialised by the ccm pod.
	started, nodesReady time.Duration
}

func TestMain(m *testing.M) {
	os.Exit(harness.MainWithOptions(m, &env, harness.Options{TenantServiceAccounts: true, ManagementServiceAccounts: true}, setup))
}

func requireWorld(t testing.TB) *world {
	t.Helper()
	harness.Require(t, need, unsupported)
	return w
}

func setup(e *harness.Env) (func() error, error) {
	need, unsupported = install.Supported(e)
	if unsupported != nil {
		return nil, nil
	}
	if n, err := node.ReapOrphans(); err != nil || n > 0 {
		klog.InfoS("Reaped what killed test binaries' nodes left", "count", n, "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	w = &world{dir: filepath.Join(e.Dir, "chartpods")}
	start := time.Now()
	if err := w.start(ctx, e); err != nil {
		return nil, errors.Join(err, w.stop())
	}
	w.started = time.Since(start)
	klog.InfoS("Charts running as pods", "took", w.started.Round(time.Millisecond), "install", w.release.Took.Round(time.Millisecond))
	return w.stop, nil
}

func (w *world) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	if w.release != nil {
		errs = append(errs, w.release.Uninstall(ctx))
	}
	for _, n := range append(w.nodes, w.mgmt) {
		if n != nil {
			errs = append(errs, n.Stop())
		}
	}
	if w.images != nil {
		errs = append(errs, w.images.Stop())
	}
	if w.sim != nil {
		errs = append(errs, w.sim.Stop())
	}
	return errors.Join(errs...)
}

func (w *world) start(ctx context.Context, e *harness.Env) error {
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return err
	}
	harnessImages, err := node.BuildImages(ctx, w.dir)
	if err != nil {
		return err
	}
	if w.sim, err = sim.Start(ctx, e, sim.Options{ClusterName: cluster, ExternalCloudProvider: true, MetalLB: true, Disks: true}); err != nil {
		return err
	}
	if w.images, err = install.PushImages(ctx, e, w.dir); err != nil {
		return err
	}
	// The management cluster runs the chart's Deployments as pods; the tenant its
	// DaemonSet, a user's volumes (PV binder, attach-detach) and the scheduler's decisions.
	if _, err := e.StartControllerManager(ctx, e.Management, install.ManagementControllers...); err != nil {
		return err
	}
	if _, err := e.StartSchedulerFor(ctx, e.Management); err != nil {
		return err
	}
	if _, err := e.StartControllerManager(ctx, e.Tenant, "serviceaccount", "root-ca-cert-publisher", "nodelifecycle",
		"daemonset", "persistentvolume-attach-detach-controller", "persistentvolume-binder-controller",
		"persistentvolume-protection-controller", "persistentvolumeclaim-protection-controller", "garbagecollector",
		// The pod garbage collector deletes the csi-node pod of the worker the scale-up story
		// added once that worker's Node is gone: a simulated worker has no kubelet to finish
		// the pod's deletion, and helm uninstall's pods would never go.
		"podgc"); err != nil {
		return err
	}
	if _, err := e.StartScheduler(ctx); err != nil {
		return err
	}
	if err := w.tenantTopology(ctx, e); err != nil {
		return err
	}
	if w.mgmt, err = node.Start(ctx, e, node.Options{Cluster: e.Management, Name: "mgmt-1",
		NodeIP: netip.MustParseAddr("10.87.0.2"), PodCIDR: netip.MustParsePrefix("10.87.1.0/24"),
		Images: []string{harnessImages}, Registries: []string{w.images.Registry.Addr}}); err != nil {
		return err
	}
	nodesStart := time.Now()
	for i, vm := range []string{"pods-w1", "pods-w2"} {
		ip, err := node.WorkerVM(ctx, e, infraNS, cluster, vm)
		if err != nil {
			return err
		}
		n, err := node.Start(ctx, e, node.Options{
			Name: vm, ProviderID: "kubevirt://" + vm, NodeIP: ip,
			PodCIDR:   netip.MustParsePrefix(fmt.Sprintf("10.86.%d.0/24", i)),
			DeviceDir: w.sim.DeviceDir(infraNS, vm), Images: []string{harnessImages}, Registries: []string{w.images.Registry.Addr},
		})
		if err != nil {
			return err
		}
		w.nodes = append(w.nodes, n)
	}
	w.release, err = install.Install(ctx, e, w.sim, install.Options{
		ClusterName: cluster, Namespace: infraNS, Images: w.images, ManagementNode: w.mgmt.Name,
		Dir: filepath.Join(w.dir, "install"), ManagementValues: fastAutoscaler,
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, w.dump(ctx))
	}
	// The ccm pod initialises the real tenant Nodes from their VMs.
	err = harness.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		for _, n := range w.nodes {
			got := &corev1.Node{}
			if err := e.Tenant.Client.Get(ctx, client.ObjectKey{Name: n.Name}, got); err != nil || !node.Ready(got) {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("tenant nodes initialised by the ccm pod: %w\n%s", err, w.dump(ctx))
	}
	w.nodesReady = time.Since(nodesStart)
	return nil
}

// fastAutoscaler are cluster-autoscaler flags an operator would not use: every delay cut to
// a loop or two, so a scale-up shows within seconds.
var fastAutoscaler = map[string]any{"autoscaler": map[string]any{"clusterAutoscaler": map[string]any{"extraArgs": []any{
	"--scan-interval=2s", "--expander=random", "--max-node-provision-time=2m",
	"--scale-down-enabled=false", "--skip-nodes-with-local-storage=false", "--skip-nodes-with-system-pods=false",
}}}}

// tenantTopology creates what Cluster API holds for the tenant: its Cluster and an autoscaled
// MachineDeployment of 2-CPU workers, at zero (scale from zero reads the template's capacity,
// which the simulated CAPK publishes).
func (w *world) tenantTopology(ctx context.Context, e *harness.Env) error {
	if err := e.Management.AddKubevirtMachineTemplateCapacity(ctx); err != nil {
		return err
	}
	if err := e.Management.Client.Create(ctx, &corev1.Namespace{ObjectMeta: objectMeta(infraNS)}); err != nil {
		return err
	}
	md := capi.NewMachineDeployment(infraNS, group, cluster, "worker", 0)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: strconv.Itoa(2)}
	md.Spec.Template.Labels[runLabel] = "yes"
	for _, obj := range []client.Object{
		capi.NewCluster(infraNS, cluster),
		capi.NewKubevirtMachineTemplate(infraNS, "worker", cluster, 2, "3Gi"),
		md,
	} {
		if err := e.Management.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	return nil
}

// dump is what an engineer reading a failed CI run needs: both releases' pods and Events
// (install.Release.Describe), the tail of every release container's log from the node it ran
// on, and of the management node's kubelet.
func (w *world) dump(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var b strings.Builder
	if w.release != nil {
		b.WriteString(w.release.Describe(ctx))
	}
	nodes := map[string]*node.Node{}
	for _, n := range append(w.nodes, w.mgmt) {
		if n != nil {
			nodes[n.Name] = n
		}
	}
	for _, side := range []struct {
		c  *harness.Cluster
		ns string
	}{{env.Management, infraNS}, {env.Tenant, install.TenantNamespace}} {
		pods := &corev1.PodList{}
		if err := side.c.Client.List(ctx, pods, client.InNamespace(side.ns), client.MatchingLabels{"app.kubernetes.io/name": "tenantcloud"}); err != nil {
			fmt.Fprintf(&b, "listing %s pods: %v\n", side.c.Name, err)
			continue
		}
		for _, p := range pods.Items {
			n := nodes[p.Spec.NodeName]
			if n == nil {
				continue
			}
			for _, c := range p.Spec.Containers {
				log, err := n.ContainerLog(p.Namespace, p.Name, string(p.UID), c.Name)
				if err != nil {
					log = err.Error()
				}
				fmt.Fprintf(&b, "--- %s %s/%s container %s on %s:\n%s\n", side.c.Name, p.Namespace, p.Name, c.Name, n.Name, tail(log, 3000))
			}
		}
	}
	if w.mgmt != nil {
		fmt.Fprintf(&b, "--- management node kubelet:\n%s\n", w.mgmt.Log("kubelet", 3000))
	}
	return b.String()
}
