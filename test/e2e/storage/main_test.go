// Package storage runs tenant storage the way a tenant user meets it: the tenant chart installed
// with the real helm, csi-node running as a DaemonSet pod from its image (pulled from a loopback
// registry) on real nodes (test/harness/node: kubelet, containerd, kube-proxy), each standing
// for a simulated VM, the real kube-controller-manager (attach-detach, PV binder, DaemonSets),
// kube-scheduler and ccm, csi-controller beside the real external-provisioner,
// external-attacher, external-resizer and csi-snapshotter, and the tenant's snapshot-controller.
// Tests only create what a user creates — StorageClasses, PVCs, Pods, VolumeSnapshots — and
// check outcomes inside the pods and in the management cluster. Volume topology is on
// (topology_test.go): the two nodes are in two zones; the chart's default class reaches both.
// The stories run with csi-controller hot-plugging through virt-api's subresources, and those
// that attach volumes run again with declarative hot-plug (TestDeclarativeHotplugStories).
package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
	"github.com/tenantcloud/tenantcloud/test/sim"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
)

const (
	cluster = "storage"
	infraNS = "storage"
	release = "tc"
	// chartNS is where the tenant chart goes, as the README installs it.
	chartNS = "kube-system"
	// storageClass is the tenant StorageClass the chart creates.
	storageClass = "tenantcloud"
)

var (
	env *harness.Env
	w   *world
	// unsupported says why this machine cannot run the suite (nil: it can); need is the
	// harness.Require need it is reported under.
	unsupported error
	need        string
)

// world is what every test shares.
type world struct {
	dir   string
	sim   *sim.Sim
	reg   *harness.Registry
	ccm   *harness.Process
	ctrl  *fixture.Controller
	procs []*harness.Process
	// csi are the CSI sidecars beside ctrl; they go down and up with it when the hot-plug
	// mode changes (a sidecar exits when it loses csi-controller's socket).
	csi []*harness.Process
	// hotplug is the mode csi-controller runs in, with the KubeVirt feature gates it needs.
	hotplug config.Hotplug
	nodes   []*node.Node
	csiNode string // the csi-node image reference pulled from the registry
	ready   time.Duration
}

func TestMain(m *testing.M) {
	os.Exit(harness.MainWithOptions(m, &env, harness.Options{TenantServiceAccounts: true}, setup))
}

// requireWorld stops a test this machine cannot run: a failure where TENANTCLOUD_REQUIRE
// demands the missing need (CI), a skip with the reason otherwise.
func requireWorld(t testing.TB) *world {
	t.Helper()
	harness.Require(t, need, unsupported)
	return w
}

func setup(e *harness.Env) (func() error, error) {
	switch {
	case node.Supported(e) != nil:
		need, unsupported = node.Need, node.Supported(e)
	case disks.Supported() != nil:
		need, unsupported = harness.NeedDisks, disks.Supported()
	}
	for _, b := range []string{"helm", "imagebuild", "csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter", "snapshot-controller"} {
		if _, err := os.Stat(filepath.Join(e.Assets.BinDir, b)); unsupported == nil && err != nil {
			need, unsupported = harness.NeedBin, fmt.Errorf("bin/%s: run make bin and make images: %w", b, err)
		}
	}
	if _, err := exec.LookPath(harness.RegistryBinary); unsupported == nil && err != nil {
		need, unsupported = harness.NeedTool, err
	}
	if unsupported != nil {
		return nil, nil
	}
	if n, err := node.ReapOrphans(); err != nil || n > 0 {
		klog.InfoS("Reaped what killed test binaries' nodes left", "count", n, "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w = &world{dir: filepath.Join(e.Dir, "storage")}
	if err := w.start(ctx, e); err != nil {
		return nil, errors.Join(err, w.stop())
	}
	return w.stop, nil
}

func (w *world) stop() error {
	var errs []error
	for _, n := range w.nodes {
		errs = append(errs, n.Stop())
	}
	errs = append(errs, w.stopCSI())
	for _, p := range w.procs {
		errs = append(errs, p.Stop())
	}
	if w.reg != nil {
		errs = append(errs, w.reg.Stop())
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
	built := make(chan error, 1)
	go func() { built <- harness.BuildPrograms(ctx, w.dir, nil, "ccm") }()
	images, err := node.BuildImages(ctx, w.dir)
	if err != nil {
		return err
	}
	if w.sim, err = sim.Start(ctx, e, sim.Options{ClusterName: cluster, ExternalCloudProvider: true, Disks: true}); err != nil {
		return err
	}
	if err := fixture.CreateNamespace(ctx, e.Management.Client, infraNS); err != nil {
		return err
	}
	if err := fixture.EnsureClasses(ctx, e.Management.Client); err != nil {
		return err
	}
	if err := fixture.EnsureZoneClasses(ctx, e.Management.Client, zoneA, zoneB); err != nil {
		return err
	}
	if err := w.startRegistry(ctx, e); err != nil {
		return err
	}
	// The tenant's controllers a cluster runs for these stories.
	if _, err := e.StartControllerManager(ctx, e.Tenant,
		"serviceaccount-controller", "root-ca-certificate-publisher-controller", "node-lifecycle-controller",
		"daemonset-controller", "persistentvolume-attach-detach-controller", "persistentvolume-binder-controller",
		"persistentvolume-expander-controller", "persistentvolume-protection-controller",
		"persistentvolumeclaim-protection-controller", "garbage-collector-controller"); err != nil {
		return err
	}
	if _, err := e.StartScheduler(ctx); err != nil {
		return err
	}
	if err := <-built; err != nil {
		return err
	}
	if err := w.startManagementSide(ctx, e); err != nil {
		return err
	}
	start := time.Now()
	for i, vm := range []string{"storage-w1", "storage-w2"} {
		ip, err := node.WorkerVM(ctx, e, infraNS, cluster, vm)
		if err != nil {
			return err
		}
		n, err := node.Start(ctx, e, node.Options{
			Name: vm, ProviderID: "kubevirt://" + vm, NodeIP: ip,
			PodCIDR:   netip.MustParsePrefix(fmt.Sprintf("10.89.%d.0/24", i)),
			DeviceDir: w.sim.DeviceDir(infraNS, vm), Images: []string{images}, Registries: []string{w.reg.Addr},
		})
		if err != nil {
			return err
		}
		w.nodes = append(w.nodes, n)
	}
	if err := w.installChart(ctx, e); err != nil {
		return err
	}
	if err := w.waitCSINodes(ctx, e); err != nil {
		return err
	}
	w.ready = time.Since(start)
	klog.InfoS("Storage world ready", "nodes", len(w.nodes), "csiNode", w.csiNode, "took", w.ready.Round(time.Millisecond))
	return nil
}

// startRegistry pushes the images make images built to a loopback registry, as
// `make images REGISTRY=... PUSH=1` does, and remembers csi-node's reference.
func (w *world) startRegistry(ctx context.Context, e *harness.Env) error {
	regDir := filepath.Join(w.dir, "registry")
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return err
	}
	var err error
	if w.reg, err = harness.StartRegistry(ctx, regDir); err != nil {
		return err
	}
	out := filepath.Join(filepath.Dir(e.Assets.BinDir), "bin", "images")
	registry := w.reg.Addr + "/tenantcloud"
	if b, err := exec.CommandContext(ctx, filepath.Join(e.Assets.BinDir, "imagebuild"), "push", "--out", out, "--registry", registry).CombinedOutput(); err != nil {
		return fmt.Errorf("pushing bin/images to %s: %w\n%s", registry, err, b)
	}
	var index struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(out, "oci", "index.json"))
	if err != nil {
		return fmt.Errorf("bin/images: run make images: %w", err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return fmt.Errorf("bin/images/oci/index.json: %w", err)
	}
	for _, m := range index.Manifests {
		if m.Annotations["io.tenantcloud.image.name"] == "csi-node" {
			ref := m.Annotations["org.opencontainers.image.ref.name"]
			w.csiNode = registry + "/csi-node:" + ref[strings.LastIndex(ref, ":")+1:]
		}
	}
	if w.csiNode == "" {
		return errors.New("bin/images holds no csi-node image: run make images")
	}
	return nil
}

// startManagementSide runs the ccm (it initialises the real Nodes from their VMs, with the zones
// of the infra Nodes running them), csi-controller for the tenant (volume topology on) and the real external-provisioner, external-attacher, external-resizer and
// csi-snapshotter beside it with the management chart's flags, and the tenant's
// snapshot-controller.
func (w *world) startManagementSide(ctx context.Context, e *harness.Env) error {
	cfg, err := yaml.Marshal(map[string]any{"clusterName": cluster, "infraNamespace": infraNS,
		"infraKubeconfig": e.Management.Kubeconfig, "tenantKubeconfig": e.Tenant.Kubeconfig})
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(w.dir, "tenant.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return err
	}
	ccm, err := harness.StartBinary("ccm", filepath.Join(w.dir, "ccm"), filepath.Join(w.dir, "ccm.log"),
		"--config", cfgPath, "--v=2", "--metrics-bind-address=127.0.0.1:0", "--node-monitor-period=500ms", "--node-zones=true",
		"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=250ms")
	if err != nil {
		return err
	}
	w.procs = append(w.procs, ccm)
	if err := w.startCSI(ctx, e, config.HotplugSubresource); err != nil {
		return err
	}
	// The tenant's own snapshot-controller (one per cluster, no CSI socket), as a tenant
	// cluster that takes snapshots runs it.
	snapCtl, err := harness.StartBinary("snapshot-controller", filepath.Join(e.Assets.BinDir, "snapshot-controller"), filepath.Join(w.dir, "snapshot-controller.log"),
		"--kubeconfig="+e.Tenant.Kubeconfig, "--leader-election", "--leader-election-namespace=kube-system", "--v=4")
	if err != nil {
		return err
	}
	w.procs = append(w.procs, snapCtl)
	return nil
}

// startCSI runs csi-controller hot-plugging in mode, with the KubeVirt feature gates that mode
// needs set on the simulator (HotplugVolumes for the subresources, DeclarativeHotplugVolumes
// alone for declarative: with both on KubeVirt ignores VM spec changes), and the real CSI
// sidecars beside it with the management chart's args.
func (w *world) startCSI(ctx context.Context, e *harness.Env, mode config.Hotplug) error {
	dir := filepath.Join(w.dir, "csi-controller")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	gate := featuregate.HotplugVolumes
	if mode == config.HotplugDeclarative {
		gate = featuregate.DeclarativeHotplugVolumes
	}
	w.sim.Gates.Set(gate)
	storage := topologyStorage()
	storage.Hotplug = mode
	var err error
	if w.ctrl, err = fixture.StartController(e.Management.Config, infra.Scope{Namespace: infraNS, ClusterName: cluster}, storage, dir); err != nil {
		return err
	}
	w.hotplug = mode
	socket := strings.TrimPrefix(w.ctrl.Endpoint, "unix://")
	names := []string{"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"}
	sidecars, err := chartSidecarArgs(ctx, filepath.Join(e.Assets.BinDir, "helm"), names...)
	if err != nil {
		return err
	}
	for _, name := range names {
		args := chartrender.LocalArgs(sidecars[name], map[string]string{"--csi-address": socket, "--kubeconfig": e.Tenant.Kubeconfig})
		p, err := harness.StartBinary(name, filepath.Join(e.Assets.BinDir, name), filepath.Join(w.dir, name+".log"), args...)
		if err != nil {
			return err
		}
		w.csi = append(w.csi, p)
	}
	klog.InfoS("csi-controller and sidecars started", "hotplug", mode, "gate", gate)
	return nil
}

// stopCSI stops the sidecars, then csi-controller.
func (w *world) stopCSI() error {
	var errs []error
	for _, p := range w.csi {
		errs = append(errs, p.Stop())
	}
	w.csi = nil
	if w.ctrl != nil {
		errs = append(errs, w.ctrl.Stop())
		w.ctrl = nil
	}
	return errors.Join(errs...)
}

// useHotplug switches the world to hot-plug mode for the rest of t, as an operator does
// (KubeVirt's gates, then csi-controller's config and a restart), and back when t ends. Both
// modes put the same entry into a VM's spec, so nothing published is lost either way; the
// stories leave nothing published anyway.
func (w *world) useHotplug(t *testing.T, mode config.Hotplug) {
	t.Helper()
	switchTo := func(mode config.Hotplug) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		if err := w.stopCSI(); err != nil {
			klog.InfoS("Stopping csi-controller and its sidecars", "err", err) // killed, as a rollout does
		}
		if err := w.startCSI(ctx, env, mode); err != nil {
			return fmt.Errorf("restarting csi-controller with storage.hotplug=%s: %w", mode, err)
		}
		t.Logf("csi-controller and sidecars restarted with storage.hotplug=%s in %s", mode, time.Since(start).Round(time.Millisecond))
		return nil
	}
	prev := w.hotplug
	if err := switchTo(mode); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := switchTo(prev); err != nil {
			t.Error(err)
		}
	})
}

// installChart installs the tenant chart with the real helm, as the README does, with csi-node
// from the registry, its built-in kubelet registration (node-driver-registrar is not built
// here), without the livenessprobe sidecar (neither is it) and with volume topology on
// (csi-node --require-zone).
func (w *world) installChart(ctx context.Context, e *harness.Env) error {
	i := strings.LastIndex(w.csiNode, ":")
	values, err := yaml.Marshal(map[string]any{
		"clusterName": cluster, "infraNamespace": infraNS,
		"images":   map[string]any{"csiNode": map[string]any{"repository": w.csiNode[:i], "tag": w.csiNode[i+1:]}},
		"csiNode":  map[string]any{"registration": "builtin", "livenessProbe": false},
		"topology": map[string]any{"enabled": true},
		"storageClasses": []any{map[string]any{
			"name": storageClass, "default": true, "infraStorageClassName": fixture.StorageClass,
			"reclaimPolicy": "Delete", "allowVolumeExpansion": true, "volumeBindingMode": "WaitForFirstConsumer",
		}},
		"volumeSnapshotClass": map[string]any{"infraSnapshotClassName": fixture.SnapshotClass},
	})
	if err != nil {
		return err
	}
	valuesPath := filepath.Join(w.dir, "tenant-values.yaml")
	if err := os.WriteFile(valuesPath, values, 0o600); err != nil {
		return err
	}
	args := []string{"install", release, filepath.Join(filepath.Dir(e.Assets.BinDir), "deploy", "charts", "tenantcloud-tenant"),
		"--namespace", chartNS, "--kubeconfig", e.Tenant.Kubeconfig, "--values", valuesPath}
	out, err := exec.CommandContext(ctx, filepath.Join(e.Assets.BinDir, "helm"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// waitCSINodes waits until the DaemonSet's pod runs on every node and the kubelet registered
// the driver there (CSINode with the VM as node ID).
func (w *world) waitCSINodes(ctx context.Context, e *harness.Env) error {
	err := harness.WaitFor(ctx, 4*time.Minute, func(ctx context.Context) (bool, error) {
		ds := &appsv1.DaemonSet{}
		if err := e.Tenant.Client.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: release + "-csi-node"}, ds); err != nil {
			return false, err
		}
		if ds.Status.NumberReady < int32(len(w.nodes)) {
			return false, fmt.Errorf("DaemonSet %d/%d ready", ds.Status.NumberReady, len(w.nodes))
		}
		for _, n := range w.nodes {
			if id, err := driverNodeID(ctx, n.Name); err != nil || id != n.Name {
				return false, fmt.Errorf("CSINode %s: node ID %q: %v", n.Name, id, err)
			}
		}
		return true, nil
	})
	if err != nil {
		pods := &corev1.PodList{}
		_ = e.Tenant.Client.List(ctx, pods, client.InNamespace(chartNS))
		var states []string
		for _, p := range pods.Items {
			states = append(states, fmt.Sprintf("%s on %s: %s %v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.ContainerStatuses))
		}
		var logs []string
		for _, n := range w.nodes {
			logs = append(logs, n.Name+" kubelet:\n"+n.Log("kubelet", 3000))
		}
		return fmt.Errorf("csi-node on every node: %w\npods: %v\n%s", err, states, strings.Join(logs, "\n"))
	}
	return nil
}

// driverNodeID is the node ID the kubelet registered for our driver in CSINode name.
func driverNodeID(ctx context.Context, name string) (string, error) {
	cn := &storagev1.CSINode{}
	if err := env.Tenant.Client.Get(ctx, client.ObjectKey{Name: name}, cn); err != nil {
		return "", err
	}
	for _, d := range cn.Spec.Drivers {
		if d.Name == tccsi.DriverName {
			return d.NodeID, nil
		}
	}
	return "", nil
}

// chartSidecarArgs renders the management chart with the real helm and returns the args of
// csi-controller's sidecar containers by name, so the sidecars run here exactly as the chart
// deploys them (timeouts, leader election, extra flags) instead of from a copy that can drift.
func chartSidecarArgs(ctx context.Context, helm string, names ...string) (map[string][]string, error) {
	const release = "tc"
	sets := append([]string{"clusterName=" + cluster, "config.storage.defaultStorageClass=" + fixture.StorageClass}, topologyChartSets(topologyStorage())...)
	objs, err := chartrender.Template(ctx, helm, "tenantcloud", release, infraNS, sets...)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, name := range names {
		if out[name], err = chartrender.ContainerArgs(objs, "Deployment", release+"-csi-controller", name); err != nil {
			return nil, err
		}
	}
	return out, nil
}
