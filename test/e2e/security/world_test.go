package security_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/csi/node"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

// The attacker is tenant alpha. beta shares alpha's infra namespace (the hardest case: its
// objects differ only in the cluster name); gamma has a namespace of its own.
const (
	infraNS      = "tenant-a"
	cluster      = "alpha"
	betaCluster  = "beta"
	otherNS      = "tenant-b"
	gammaCluster = "gamma"

	workers     = "alpha-workers" // alpha's MachineDeployment
	betaWorkers = "beta-workers"
	template    = "worker"
	betaVM      = "beta-w1"
	gammaVM     = "gamma-w1"
	bootVM      = "alpha-boot" // an alpha VM booting from a DataVolume root disk
	betaMachine = "beta-m1"

	maxServices = 2
	maxVolumes  = 3
	maxTotal    = "1Gi"
	mib         = int64(1) << 20
	waitTimeout = time.Minute

	// victimIP is held by gamma's load balancer, shared under gamma's key.
	victimIP  = "192.0.2.20"
	victimKey = otherNS + "." + gammaCluster + ".shared"
)

var pools = []struct{ name, cidr string }{
	{"public", "192.0.2.0/27"}, {"internal", "198.51.100.0/28"}, {"foreign", "203.0.113.0/28"},
}

// world is everything the attacks run against: both clusters, the other tenants' objects and
// alpha's four components.
type world struct {
	ctx          context.Context
	mgmt, tenant client.Client
	dir          string
	scope        infra.Scope

	csiCtrl    *fixture.Controller // alpha's csi-controller
	betaCtrl   *fixture.Controller // beta's, to make beta's objects the real way
	node       csi.NodeClient      // alpha's csi-node, "inside" alpha's worker VM
	kubeletDir string
	provider   protos.CloudProviderClient
	ccm        *harness.Process

	alphaVM, alphaNode   string // alpha's worker (VM and tenant Node)
	alphaVol             string // alpha's own volume
	betaVol, betaSnap    string // beta's volume (published to beta-w1) and its snapshot
	rootDisk, lookalike  string // alpha-labelled DataVolumes tenantcloud did not create
	gammaVol             string // a DataVolume of gamma's in tenant-b, tenantcloud-marked for gamma
	victim               *corev1.Service
	betaVMAddresses      []string
	gammaVMAddresses     []string
	alphaWorkerAddresses []string
}

// storage is alpha's grant: the fixture's with volume topology (a zonal class in zone-a and
// zone-b, FixedStorageClass pinned to zone-a; attacks 12a-12d), and small quotas.
func storage() config.Storage {
	s := fixture.TopologyStorage(zoneA, zoneA, zoneB)
	s.MaxVolumes, s.MaxTotalCapacity = maxVolumes, maxTotal
	return s
}

// startWorld builds the world in dependency order; components start once the objects they
// are attacked with exist.
func startWorld(t *testing.T) *world {
	harness.Require(t, harness.NeedDisks, disksErr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir, err := os.MkdirTemp("", "security-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("component logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	w := &world{ctx: ctx, mgmt: env.Management.Client, tenant: env.Tenant.Client, dir: dir,
		scope: infra.Scope{Namespace: infraNS, ClusterName: cluster}}
	start := time.Now()
	built := make(chan error, 1)
	go func() { built <- harness.BuildPrograms(ctx, dir, nil, "ccm") }()

	for _, ns := range []string{infraNS, otherNS} {
		w.must(t, fixture.CreateNamespace(ctx, w.mgmt, ns))
	}
	w.must(t, fixture.EnsureClasses(ctx, w.mgmt))
	w.must(t, fixture.EnsureZoneClasses(ctx, w.mgmt, zoneA, zoneB))
	for _, p := range pools {
		w.create(t, w.mgmt, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
			"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": p.name},
			"spec":     map[string]any{"addresses": []any{p.cidr}, "autoAssign": p.name == "public"},
		}})
	}

	// alpha: a Cluster API worker (MachineDeployment → Machine → VM → tenant Node) and a VM
	// that boots from a cluster-labelled root-disk DataVolume.
	w.create(t, w.mgmt, capi.NewCluster(infraNS, cluster))
	w.create(t, w.mgmt, capi.NewKubevirtMachineTemplate(infraNS, template, cluster, 2, "1Gi"))
	md := capi.NewMachineDeployment(infraNS, workers, cluster, template, 1)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "1", autoscaler.AnnotationMaxSize: "3"}
	w.create(t, w.mgmt, md)
	w.rootDisk = w.dataVolume(t, infraNS, "alpha-boot-rootdisk", map[string]string{infra.LabelClusterName: cluster}, nil)
	w.must(t, fixture.CreateRunningVM(ctx, w.mgmt, infraNS, cluster, bootVM, w.rootDisk))

	// beta (same namespace) and gamma (another namespace): VMs, Machines and node groups
	// outside the simulator's cluster, so nothing reconciles them but their owners.
	w.must(t, fixture.CreateRunningVM(ctx, w.mgmt, infraNS, betaCluster, betaVM, ""))
	w.must(t, fixture.CreateRunningVM(ctx, w.mgmt, otherNS, gammaCluster, gammaVM, ""))
	w.betaVMAddresses, w.gammaVMAddresses = w.vmiAddresses(t, infraNS, betaVM), w.vmiAddresses(t, otherNS, gammaVM)
	bmd := capi.NewMachineDeployment(infraNS, betaWorkers, betaCluster, template, 1)
	bmd.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "3"}
	w.create(t, w.mgmt, bmd)
	bm := &clusterv1.Machine{
		ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: betaMachine, Labels: map[string]string{
			infra.LabelClusterName: betaCluster, clusterv1.MachineDeploymentNameLabel: betaWorkers}},
		Spec: bmd.Spec.Template.Spec,
	}
	bm.Spec.ProviderID = infra.ProviderID(betaVM)
	w.create(t, w.mgmt, bm)

	// Volumes: beta's, made by beta's own csi-controller, hot-plugged into beta's VM and
	// snapshotted; a look-alike carrying every alpha mark under a name alpha never derived;
	// gamma's, tenantcloud-marked, in gamma's namespace.
	w.betaCtrl = w.startController(t, infra.Scope{Namespace: infraNS, ClusterName: betaCluster}, fixture.Storage(), "beta")
	w.betaVol = w.createVolume(t, w.betaCtrl, "pvc-beta-data", 16*mib)
	if _, err := w.betaCtrl.Controller.ControllerPublishVolume(w.call(t), &csi.ControllerPublishVolumeRequest{
		VolumeId: w.betaVol, NodeId: betaVM, VolumeCapability: mountCap()}); err != nil {
		t.Fatalf("beta publishes its volume: %v", err)
	}
	snap, err := w.betaCtrl.Controller.CreateSnapshot(w.call(t), &csi.CreateSnapshotRequest{Name: "snap-beta", SourceVolumeId: w.betaVol})
	if err != nil {
		t.Fatalf("beta snapshots its volume: %v", err)
	}
	w.betaSnap = snap.GetSnapshot().GetSnapshotId()
	ann := w.scope.OwnedAnnotations()
	ann[controller.AnnVolumeName], ann[controller.AnnCapacity] = "a-forged-name", fmt.Sprint(16*mib)
	w.lookalike = w.dataVolume(t, infraNS, controller.VolumeID(cluster, "the-real-name"), w.scope.OwnedLabels(controller.Component), ann)
	gamma := infra.Scope{Namespace: otherNS, ClusterName: gammaCluster}
	w.gammaVol = w.dataVolume(t, otherNS, controller.VolumeID(gammaCluster, "pvc-gamma"), gamma.OwnedLabels(controller.Component), gamma.OwnedAnnotations())

	// gamma's load balancer, holding victimIP under gamma's scoped sharing key.
	w.victim = &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: otherNS, Name: "gamma-lb", Labels: gamma.OwnedLabels("ccm"), Annotations: map[string]string{
			"metallb.io/address-pool": "public", "metallb.io/loadBalancerIPs": victimIP, "metallb.io/allow-shared-ip": victimKey}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	w.create(t, w.mgmt, w.victim)
	w.eventually(t, "gamma's load balancer holds "+victimIP, func() (bool, error) {
		err := w.mgmt.Get(ctx, client.ObjectKeyFromObject(w.victim), w.victim)
		return err == nil && len(w.victim.Status.LoadBalancer.Ingress) > 0, err
	})

	// alpha's components.
	w.csiCtrl = w.startController(t, w.scope, storage(), "alpha")
	w.alphaVol = w.createVolume(t, w.csiCtrl, "pvc-alpha-data", 16*mib)
	w.provider = w.startProvider(t)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	w.ccm = w.startCCM(t)
	w.alphaVM, w.alphaNode = w.waitWorker(t)
	w.alphaWorkerAddresses = w.vmiAddresses(t, infraNS, w.alphaVM)
	w.node, w.kubeletDir = w.startNode(t)
	t.Logf("world ready in %s: alpha worker %s (Node %s), beta %s, gamma %s/%s",
		time.Since(start).Round(time.Millisecond), w.alphaVM, w.alphaNode, betaVM, otherNS, gammaVM)
	return w
}

func (w *world) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (w *world) create(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(w.ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// eventually waits for cond; errors are retried, as both clusters are eventually consistent.
func (w *world) eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	harness.Eventually(t, w.ctx, waitTimeout, what, func(context.Context) (bool, error) { return cond() })
}

// call bounds one gRPC call, as the CSI sidecars' and cluster-autoscaler's timeouts do.
func (w *world) call(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dataVolume creates a blank Block DataVolume as CAPK (root disks) or a csi-controller would
// and waits until it is populated.
func (w *world) dataVolume(t *testing.T, ns, name string, labels, annotations map[string]string) string {
	t.Helper()
	class, mode := fixture.StorageClass, corev1.PersistentVolumeBlock
	dv := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec: cdiv1.DataVolumeSpec{
			Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			Storage: &cdiv1.StorageSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeMode: &mode, StorageClassName: &class,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
			},
		},
	}
	w.create(t, w.mgmt, dv)
	w.eventually(t, "DataVolume "+ns+"/"+name+" populated", func() (bool, error) {
		err := w.mgmt.Get(w.ctx, client.ObjectKeyFromObject(dv), dv)
		return dv.Status.Phase == cdiv1.Succeeded, err
	})
	return name
}

func (w *world) vmiAddresses(t *testing.T, ns, name string) []string {
	t.Helper()
	var out []string
	w.eventually(t, "addresses of VMI "+ns+"/"+name, func() (bool, error) {
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: ns, Name: name}, vmi); err != nil {
			return false, err
		}
		out = nil
		for _, iface := range vmi.Status.Interfaces {
			out = append(out, iface.IPs...)
		}
		return len(out) > 0, nil
	})
	return out
}

func (w *world) startController(t *testing.T, scope infra.Scope, st config.Storage, name string) *fixture.Controller {
	t.Helper()
	sockDir := filepath.Join(w.dir, "csi-"+name)
	w.must(t, os.MkdirAll(sockDir, 0o755))
	c, err := fixture.StartController(env.Management.Config, scope, st, sockDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping csi-controller %s: %v", name, err)
		}
	})
	return c
}

func mountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	}
}

func createReq(name string, size int64) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}}
}

func (w *world) createVolume(t *testing.T, c *fixture.Controller, name string, size int64) string {
	t.Helper()
	rsp, err := c.Controller.CreateVolume(w.call(t), createReq(name, size))
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return rsp.GetVolume().GetVolumeId()
}

// startProvider runs alpha's autoscaler-provider in-process over TCP, as cluster-autoscaler
// reaches it.
func (w *world) startProvider(t *testing.T) protos.CloudProviderClient {
	t.Helper()
	p, err := fixture.StartProvider(w.ctx, env.Management.Config, env.Tenant.Config, w.scope)
	w.must(t, err)
	t.Cleanup(func() { _ = p.Stop() })
	return p.Client
}

// startNode runs alpha's csi-node for the worker VM, seeing that VM's disks, served on a unix
// socket as kubelet reaches it.
func (w *world) startNode(t *testing.T) (csi.NodeClient, string) {
	t.Helper()
	kubelet := filepath.Join(w.dir, "kubelet")
	w.must(t, os.MkdirAll(kubelet, 0o750))
	srv, err := node.New(node.Options{NodeID: w.alphaVM, DeviceDir: simulator.DeviceDir(infraNS, w.alphaVM), KubeletDir: kubelet, DeviceWaitTimeout: time.Second})
	w.must(t, err)
	ctx, cancel := context.WithCancel(w.ctx)
	endpoint := "unix://" + filepath.Join(w.dir, "node.sock")
	served := make(chan error, 1)
	go func() {
		served <- tccsi.Serve(ctx, endpoint, func(r grpc.ServiceRegistrar) { csi.RegisterNodeServer(r, srv) })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("csi-node: %v", err)
		}
	})
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	w.must(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	nc := csi.NewNodeClient(conn)
	if _, err := nc.NodeGetInfo(w.call(t), &csi.NodeGetInfoRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("csi-node does not answer: %v", err)
	}
	return nc, kubelet
}

// waitWorker waits for alpha's worker: its tenant Node initialised by the ccm (no
// uninitialized taint, providerID set).
func (w *world) waitWorker(t *testing.T) (vm, nodeName string) {
	t.Helper()
	w.eventually(t, "alpha's worker Node initialised by the ccm", func() (bool, error) {
		var nodes corev1.NodeList
		if err := w.tenant.List(w.ctx, &nodes); err != nil {
			return false, err
		}
		for _, n := range nodes.Items {
			name, err := infra.VMNameFromProviderID(n.Spec.ProviderID)
			if err != nil || !strings.HasPrefix(name, workers) || hasTaint(&n, uninitializedTaint) {
				continue
			}
			vm, nodeName = name, n.Name
			return true, nil
		}
		return false, nil
	})
	return vm, nodeName
}

const (
	uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"
	// providedNodeIP is the annotation a kubelet under an external cloud provider writes from
	// --node-ip; the cloud node controller only accepts an IP the cloud reports for the VM.
	providedNodeIP = "alpha.kubernetes.io/provided-node-ip"
)

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// startCCM runs the ccm binary as it is deployed: a config file, admin credentials for the
// management cluster (so only its own checks refuse), an admin identity in the tenant.
func (w *world) startCCM(t *testing.T) *harness.Process {
	t.Helper()
	tenantID, err := env.Tenant.AddUser("tenantcloud-ccm", "system:masters")
	w.must(t, err)
	cfg := map[string]any{
		"clusterName": cluster, "infraNamespace": infraNS,
		"infraKubeconfig": env.Management.Kubeconfig, "tenantKubeconfig": tenantID.Kubeconfig,
		"loadBalancer": map[string]any{
			"allowedPools": []string{"public", "internal"}, "defaultPool": "public",
			"allowedIPRanges": []string{"192.0.2.0/27", "198.51.100.0/28"}, "maxServices": maxServices,
		},
		"storage": map[string]any{"defaultStorageClass": fixture.StorageClass},
	}
	data, err := yaml.Marshal(cfg)
	w.must(t, err)
	cfgPath := filepath.Join(w.dir, "tenant.yaml")
	w.must(t, os.WriteFile(cfgPath, data, 0o600))
	p, err := harness.StartBinary("ccm", filepath.Join(w.dir, "ccm"), filepath.Join(w.dir, "ccm.log"),
		"--config", cfgPath, "--v=2", "--node-zones",
		"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=250ms",
		"--node-monitor-period=500ms", "--concurrent-service-syncs=4", "--metrics-bind-address=127.0.0.1:0")
	w.must(t, err)
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("ccm log tail:\n%s", p.Log(8000))
		}
	})
	return p
}

// ccmAlive fails the test if the ccm exited: a crash is not a refusal.
func ccmAlive(t *testing.T, p *harness.Process) {
	t.Helper()
	if exited, err := p.Exited(); exited {
		t.Fatalf("ccm exited: %v (log %s)", err, p.LogFile)
	}
}
