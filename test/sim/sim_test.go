package sim

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/kubevirt"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }

// eventually polls cond until it holds or the deadline passes; the simulator is event-driven,
// the poll only observes it.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// One test drives every simulated part together, the way the components will: Cluster API
// makes a worker VM and tenant Node, CDI makes a disk that virt-api hot-plugs into the VM and
// the guest sees by serial, and MetalLB gives a LoadBalancer Service an IP.
func TestWholeChain(t *testing.T) {
	ctx := context.Background()
	// Without loop devices the chain runs without guest disks; its GuestDisk step then skips,
	// or fails where the environment demands disks (harness.Require).
	disksErr := disks.Supported()
	s, err := Start(ctx, env, Options{ClusterName: "alpha", ExternalCloudProvider: true, MetalLB: true, Disks: disksErr == nil})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping simulator: %v", err)
		}
	})
	mgmt, tenant := env.Management.Client, env.Tenant.Client
	const ns = "tenant-alpha"
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		capi.NewCluster(ns, "alpha"),
		capi.NewKubevirtMachineTemplate(ns, "md-0", "alpha", 2, "4Gi"),
		capi.NewMachineDeployment(ns, "md-0", "alpha", "md-0", 1),
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T: %v", obj, err)
		}
	}

	// Cluster API → VM → tenant Node with the providerID CAPK sets and the cloud taint.
	var node corev1.Node
	eventually(t, "tenant Node with a kubevirt providerID", func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		if err := tenant.List(ctx, &nodes); err != nil {
			return false, err
		}
		for _, n := range nodes.Items {
			if strings.HasPrefix(n.Spec.ProviderID, infra.ProviderIDPrefix) {
				node = n
				return true, nil
			}
		}
		return false, nil
	})
	if !hasTaint(&node, "node.cloudprovider.kubernetes.io/uninitialized") {
		t.Errorf("tenant Node %s lacks the uninitialized taint: %v", node.Name, node.Spec.Taints)
	}
	vmName, err := infra.VMNameFromProviderID(node.Spec.ProviderID)
	if err != nil {
		t.Fatal(err)
	}
	var vmi kubevirtv1.VirtualMachineInstance
	eventually(t, "worker VMI running with both address families", func(ctx context.Context) (bool, error) {
		if err := mgmt.Get(ctx, client.ObjectKey{Namespace: ns, Name: vmName}, &vmi); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return vmi.Status.Phase == kubevirtv1.Running && len(vmi.Status.Interfaces) > 0 && len(vmi.Status.Interfaces[0].IPs) == 2, nil
	})
	var pods corev1.PodList
	if err := mgmt.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{infra.LabelClusterName: "alpha", infra.LabelRole: infra.RoleWorker}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("want one worker virt-launcher pod labelled for the cluster, got %d", len(pods.Items))
	}

	// CDI → DataVolume → hot-plugged into the worker VM → a disk the guest sees by serial.
	expand := true
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "linstor"}, Provisioner: "linstor.csi.linbit.com", AllowVolumeExpansion: &expand}
	block := corev1.PersistentVolumeBlock
	dv := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-1"},
		Spec: cdiv1.DataVolumeSpec{
			Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			Storage: &cdiv1.StorageSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeMode: &block, StorageClassName: &sc.Name,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
			},
		},
	}
	for _, obj := range []client.Object{sc, dv} {
		if err := mgmt.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "DataVolume Succeeded", func(ctx context.Context) (bool, error) {
		err := mgmt.Get(ctx, client.ObjectKeyFromObject(dv), dv)
		return err == nil && dv.Status.Phase == cdiv1.Succeeded, err
	})
	kv, err := kubevirt.NewForConfig(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	const serial = "chain-serial-0001"
	err = kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctx, vmName, &kubevirtv1.AddVolumeOptions{
		Name:         "data-1",
		Disk:         &kubevirtv1.Disk{Serial: serial, DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusSCSI}}},
		VolumeSource: &kubevirtv1.HotplugVolumeSource{DataVolume: &kubevirtv1.DataVolumeSource{Name: dv.Name, Hotpluggable: true}},
	})
	if err != nil {
		t.Fatalf("addvolume through the aggregation layer: %v", err)
	}
	eventually(t, "hot-plugged volume Ready on the VMI", func(ctx context.Context) (bool, error) {
		if err := mgmt.Get(ctx, client.ObjectKeyFromObject(&vmi), &vmi); err != nil {
			return false, err
		}
		for _, vs := range vmi.Status.VolumeStatus {
			if vs.Name == "data-1" {
				return vs.Phase == kubevirtv1.VolumeReady, nil
			}
		}
		return false, nil
	})
	t.Run("GuestDisk", func(t *testing.T) {
		harness.Require(t, harness.NeedDisks, disksErr)
		link := filepath.Join(s.DeviceDir(ns, vmName), "scsi-0QEMU_QEMU_HARDDISK_"+serial)
		dev, err := filepath.EvalSymlinks(link)
		if err != nil || !strings.HasPrefix(dev, "/dev/loop") {
			t.Fatalf("guest disk %s: resolves to %q, %v", link, dev, err)
		}
		size, err := disks.DeviceSize(dev)
		if err != nil || size < 64<<20 {
			t.Fatalf("guest disk %s is %d bytes (%v), want at least 64Mi", dev, size, err)
		}
	})

	// MetalLB → an IP from the pool for a LoadBalancer selecting the cluster's workers.
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": "tenants"},
		"spec":     map[string]any{"addresses": []any{"192.0.2.0/28"}},
	}}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lb"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{infra.LabelClusterName: "alpha", infra.LabelRole: infra.RoleWorker},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, obj := range []client.Object{pool, svc} {
		if err := mgmt.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	prefix := netip.MustParsePrefix("192.0.2.0/28")
	eventually(t, "MetalLB assigns an IP from the pool", func(ctx context.Context) (bool, error) {
		if err := mgmt.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return false, err
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(in.IP); err == nil && prefix.Contains(ip) {
				return true, nil
			}
		}
		return false, nil
	})

	// Scale to zero: Machine, VM and tenant Node go away.
	md := capi.NewMachineDeployment(ns, "md-0", "alpha", "md-0", 0)
	if err := mgmt.Get(ctx, client.ObjectKeyFromObject(md), md); err != nil {
		t.Fatal(err)
	}
	zero := int32(0)
	md.Spec.Replicas = &zero
	if err := mgmt.Update(ctx, md); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant Node and VM removed after scale to zero", func(ctx context.Context) (bool, error) {
		nodeErr := tenant.Get(ctx, client.ObjectKeyFromObject(&node), &corev1.Node{})
		vmErr := mgmt.Get(ctx, client.ObjectKey{Namespace: ns, Name: vmName}, &kubevirtv1.VirtualMachine{})
		return client.IgnoreNotFound(nodeErr) == nil && nodeErr != nil && client.IgnoreNotFound(vmErr) == nil && vmErr != nil, nil
	})
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}
