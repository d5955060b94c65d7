package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
	"github.com/tenantcloud/tenantcloud/test/sim"
)

const (
	cluster = "realnodes"
	infraNS = "realnodes"
)

var (
	env *harness.Env
	// world is nil when this machine cannot run real nodes (unsupported says why).
	world       *nodeWorld
	unsupported error
)

// nodeWorld is what every test here shares: the simulator, the ccm and two real nodes, each
// standing for a worker VM of the simulator.
type nodeWorld struct {
	sim    *sim.Sim
	dir    string
	ccm    *harness.Process
	nodes  []*node.Node
	ips    map[string]netip.Addr
	cidrs  map[string]netip.Prefix
	vms    []string
	ready  time.Duration // first node start → both Nodes Ready and initialised
	images string
	// mgmt is a node of the management cluster.
	mgmt      *node.Node
	mgmtCIDR  netip.Prefix
	mgmtReady time.Duration // start → Ready and untainted
}

// The management node's address and pod network, apart from the tenant nodes' and from the
// simulator's VM addresses (10.244.0.0/16).
var (
	mgmtNodeIP   = netip.MustParseAddr("10.87.0.2")
	mgmtPodCIDR  = netip.MustParsePrefix("10.87.1.0/24")
	mgmtNodeName = "realnodes-mgmt"
)

// Both apiservers run the ServiceAccount admission plugin, as a cluster's does: pods on the
// real nodes get their tokens the way they would there.
func TestMain(m *testing.M) {
	os.Exit(harness.MainWithOptions(m, &env, harness.Options{TenantServiceAccounts: true, ManagementServiceAccounts: true}, setup))
}

func setup(e *harness.Env) (func() error, error) {
	if unsupported = node.Supported(e); unsupported != nil {
		return nil, nil // each test reports it through requireNodes
	}
	if n, err := node.ReapOrphans(); err != nil || n > 0 {
		klog.InfoS("Reaped what killed test binaries' nodes left", "count", n, "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := &nodeWorld{dir: filepath.Join(e.Dir, "world"), ips: map[string]netip.Addr{}, cidrs: map[string]netip.Prefix{},
		vms: []string{"realnodes-w1", "realnodes-w2"}}
	world = w
	stop := func() error {
		var errs []error
		for _, n := range w.nodes {
			errs = append(errs, n.Stop())
		}
		if w.mgmt != nil {
			errs = append(errs, w.mgmt.Stop())
		}
		if w.ccm != nil {
			errs = append(errs, w.ccm.Stop())
		}
		if w.sim != nil {
			errs = append(errs, w.sim.Stop())
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (func() error, error) {
		return nil, errors.Join(err, stop())
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return fail(err)
	}
	built := make(chan error, 1)
	go func() { built <- harness.BuildPrograms(ctx, w.dir, nil, "ccm", "csi-node") }()
	var err error
	if w.images, err = node.BuildImages(ctx, w.dir); err != nil {
		return fail(err)
	}
	if w.sim, err = sim.Start(ctx, e, sim.Options{ClusterName: cluster, ExternalCloudProvider: true, Disks: true}); err != nil {
		return fail(err)
	}
	if err := e.Management.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: infraNS}}); err != nil {
		return fail(err)
	}
	// Pods get their ServiceAccount token and the cluster CA as in a cluster: the
	// ServiceAccount and kube-root-ca.crt come from the real controllers. The node lifecycle
	// controller lifts the not-ready taint a Node registers with once its kubelet reports
	// Ready (and would mark it unreachable when its Lease stops being renewed).
	if _, err := e.StartControllerManager(ctx, e.Tenant, "serviceaccount", "root-ca-cert-publisher", "nodelifecycle"); err != nil {
		return fail(err)
	}
	if _, err := e.StartScheduler(ctx); err != nil {
		return fail(err)
	}
	// The management cluster runs pods on its node the same way.
	if _, err := e.StartControllerManager(ctx, e.Management, "serviceaccount", "root-ca-cert-publisher", "nodelifecycle"); err != nil {
		return fail(err)
	}
	if _, err := e.StartSchedulerFor(ctx, e.Management); err != nil {
		return fail(err)
	}
	if err := <-built; err != nil {
		return fail(err)
	}
	if w.ccm, err = startCCM(e, w.dir); err != nil {
		return fail(err)
	}
	start := time.Now()
	for i, vm := range w.vms {
		ip, err := node.WorkerVM(ctx, e, infraNS, cluster, vm)
		if err != nil {
			return fail(err)
		}
		w.ips[vm] = ip
		w.cidrs[vm] = netip.MustParsePrefix(fmt.Sprintf("10.88.%d.0/24", i))
		n, err := node.Start(ctx, e, node.Options{
			Name: vm, ProviderID: "kubevirt://" + vm, NodeIP: ip, PodCIDR: w.cidrs[vm],
			DeviceDir: w.sim.DeviceDir(infraNS, vm), Images: []string{w.images},
		})
		if err != nil {
			return fail(err)
		}
		w.nodes = append(w.nodes, n)
	}
	for _, n := range w.nodes {
		err := harness.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
			got := &corev1.Node{}
			if err := e.Tenant.Client.Get(ctx, clientKey(n.Name), got); err != nil {
				return false, err
			}
			return node.Ready(got), nil
		})
		if err != nil {
			return fail(fmt.Errorf("node %s Ready and initialised: %w\nkubelet:\n%s\nccm:\n%s", n.Name, err, n.Log("kubelet", 6000), w.ccm.Log(3000)))
		}
	}
	w.ready = time.Since(start)
	klog.InfoS("Real nodes Ready", "nodes", len(w.nodes), "took", w.ready.Round(time.Millisecond))

	start = time.Now()
	w.mgmtCIDR = mgmtPodCIDR
	if w.mgmt, err = node.Start(ctx, e, node.Options{Cluster: e.Management, Name: mgmtNodeName,
		NodeIP: mgmtNodeIP, PodCIDR: mgmtPodCIDR, Images: []string{w.images}}); err != nil {
		return fail(err)
	}
	err = harness.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		got := &corev1.Node{}
		if err := e.Management.Client.Get(ctx, clientKey(mgmtNodeName), got); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		// The node lifecycle controller lifts the not-ready taints soon after Ready.
		return node.Ready(got) && len(got.Spec.Taints) == 0, nil
	})
	if err != nil {
		return fail(fmt.Errorf("management node Ready: %w\nkubelet:\n%s", err, w.mgmt.Log("kubelet", 6000)))
	}
	w.mgmtReady = time.Since(start)
	klog.InfoS("Real management node Ready", "node", mgmtNodeName, "took", w.mgmtReady.Round(time.Millisecond))
	return stop, nil
}

// startCCM runs the real ccm binary for the tenant, so it initialises the real Nodes from
// their VMs (addresses, instance type) and lifts the uninitialized taint.
func startCCM(e *harness.Env, dir string) (*harness.Process, error) {
	cfg, err := yaml.Marshal(map[string]any{
		"clusterName": cluster, "infraNamespace": infraNS,
		"infraKubeconfig": e.Management.Kubeconfig, "tenantKubeconfig": e.Tenant.Kubeconfig,
	})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "tenant.yaml")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return nil, err
	}
	return harness.StartBinary("ccm", filepath.Join(dir, "ccm"), filepath.Join(dir, "ccm.log"),
		"--config", path, "--v=2", "--metrics-bind-address=127.0.0.1:0",
		"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=250ms",
		"--node-monitor-period=500ms")
}

// requireNodes stops a test that cannot run here: it fails where TENANTCLOUD_REQUIRE demands
// real nodes (CI), skips otherwise. A node that cannot start on a machine that has everything
// fails TestMain itself.
func requireNodes(t *testing.T) *nodeWorld {
	t.Helper()
	harness.Require(t, node.Need, unsupported)
	return world
}
