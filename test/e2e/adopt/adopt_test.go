package adopt_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/node"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
	"github.com/tenantcloud/tenantcloud/test/upstream"
)

const (
	infraNS  = "tenant-a"
	cluster  = "alpha"
	workers  = "alpha-workers"
	template = "worker"
	appNS    = "default"

	// csiLabel is what the upstream CSI controller ran with (--infra-cluster-labels).
	csiLabel = "csi-driver/cluster=" + cluster

	pool        = "public"
	poolCIDR    = "192.0.2.0/27"
	waitTimeout = 2 * time.Minute
	mib         = int64(1) << 20
	// xfsprogs refuses filesystems below 300 MiB; the loop files are sparse.
	volumeSize   = 320 * mib
	expandedSize = 400 * mib
	content      = "written through the upstream driver before the switch\n"
)

type suite struct {
	ctx          context.Context
	mgmt, tenant client.Client
	dir          string
	scope        infra.Scope
	vm           string
	cfgPath      string
}

// TestAdopt builds the upstream-made world, adopts it with the adopt binary and switches to
// tenantcloud's components; the subtests run in order on that one world.
func TestAdopt(t *testing.T) {
	requireDisks(t)
	s := setUp(t)

	// The upstream world: a load balancer with its MetalLB address, a volume with data.
	tsvc, infraSvc, address := s.upstreamLoadBalancer(t)
	pvc, dv, pv := s.upstreamVolume(t, "data", false)
	// A volume a pod uses at the switch: attached by upstream, no publish context anywhere.
	_, attachedDV, attachedPV := s.upstreamVolume(t, "in-use", true)

	t.Run("DryRunChangesNothing", func(t *testing.T) {
		out := s.adopt(t)
		if !hasRow(out, "claim", "Service", infraSvc.Name) || !hasRow(out, "claim", "DataVolume", dv.Name) ||
			!hasRow(out, "claim", "DataVolume", attachedDV.Name) || !strings.Contains(out, "dry run: nothing changed") {
			t.Errorf("dry run does not list both objects as claimable:\n%s", out)
		}
		got := &corev1.Service{}
		s.must(t, s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(infraSvc), got))
		if s.scope.Owns(got) {
			t.Fatal("a dry run marked the infra Service")
		}
	})
	t.Run("ApplyClaimsAllAndIsIdempotent", func(t *testing.T) {
		if out := s.adopt(t, "--apply"); !strings.Contains(out, "marked 3 of 3 proven objects") {
			t.Fatalf("apply:\n%s", out)
		}
		if out := s.adopt(t, "--apply"); !strings.Contains(out, "0 to claim, 3 already adopted, 0 refused") {
			t.Fatalf("second apply:\n%s", out)
		}
	})
	t.Run("ServiceKeepsItsAddress", func(t *testing.T) { s.switchLoadBalancer(t, tsvc, infraSvc, address) })
	t.Run("VolumeServedUnderLegacyHandle", func(t *testing.T) { s.switchVolume(t, pvc, dv, pv) })
	t.Run("AttachedVolumeFoundByItsUpstreamSerial", func(t *testing.T) { s.attachedVolume(t, attachedDV, attachedPV) })
}

func setUp(t *testing.T) *suite {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir, err := os.MkdirTemp("", "adopt-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	s := &suite{ctx: ctx, mgmt: env.Management.Client, tenant: env.Tenant.Client, dir: dir,
		scope: infra.Scope{Namespace: infraNS, ClusterName: cluster}}
	built := make(chan error, 1)
	go func() { built <- harness.BuildPrograms(ctx, dir, nil, "ccm", "adopt") }()

	s.must(t, fixture.CreateNamespace(ctx, s.mgmt, infraNS))
	s.must(t, fixture.EnsureClasses(ctx, s.mgmt))
	s.create(t, s.mgmt, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": pool},
		"spec":     map[string]any{"addresses": []any{poolCIDR}, "autoAssign": true},
	}})
	s.create(t, s.mgmt, capi.NewCluster(infraNS, cluster))
	s.create(t, s.mgmt, capi.NewKubevirtMachineTemplate(infraNS, template, cluster, 2, "1Gi"))
	s.create(t, s.mgmt, capi.NewMachineDeployment(infraNS, workers, cluster, template, 1))
	s.eventually(t, "the worker VM runs", func() (bool, error) {
		var vmis kubevirtv1.VirtualMachineInstanceList
		if err := s.mgmt.List(ctx, &vmis, client.InNamespace(infraNS), client.MatchingLabels{infra.LabelClusterName: cluster}); err != nil {
			return false, err
		}
		for _, vmi := range vmis.Items {
			if vmi.Status.Phase == kubevirtv1.Running {
				s.vm = vmi.Name
				return true, nil
			}
		}
		return false, nil
	})

	tenantID, err := env.Tenant.AddUser("tenantcloud-ccm", "system:masters")
	s.must(t, err)
	cfg := map[string]any{
		"clusterName": cluster, "infraNamespace": infraNS,
		"infraKubeconfig": env.Management.Kubeconfig, "tenantKubeconfig": tenantID.Kubeconfig,
		"loadBalancer": map[string]any{"allowedPools": []string{pool}, "defaultPool": pool},
		"storage":      map[string]any{"defaultStorageClass": fixture.StorageClass},
	}
	data, err := yaml.Marshal(cfg)
	s.must(t, err)
	s.cfgPath = filepath.Join(dir, "tenant.yaml")
	s.must(t, os.WriteFile(s.cfgPath, data, 0o600))
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	return s
}

// upstreamLoadBalancer makes a tenant LoadBalancer Service and the infra Service the upstream
// CCM would have made for it, waits for MetalLB's address and records it on the tenant
// Service, as the upstream service controller did.
func (s *suite) upstreamLoadBalancer(t *testing.T) (*corev1.Service, *corev1.Service, string) {
	t.Helper()
	tsvc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "web", Annotations: map[string]string{"example.com/team": "shop"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
	s.create(t, s.tenant, tsvc)
	infraSvc := upstream.InfraService(tsvc, infraNS, cluster, nil)
	s.create(t, s.mgmt, infraSvc)
	var address string
	s.eventually(t, "MetalLB gives the upstream infra Service an address", func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(infraSvc), infraSvc); err != nil {
			return false, err
		}
		if len(infraSvc.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		address = infraSvc.Status.LoadBalancer.Ingress[0].IP
		return true, nil
	})
	tsvc.Status.LoadBalancer = corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: address}}}
	s.must(t, s.tenant.Status().Update(s.ctx, tsvc))
	t.Logf("upstream load balancer %s/%s has %s (tenant Service %s/%s, uid %s)", infraNS, infraSvc.Name, address, appNS, tsvc.Name, tsvc.UID)
	return tsvc, infraSvc, address
}

// upstreamVolume makes a tenant PVC, the DataVolume and PV the upstream CSI driver would have
// made for it, and plays the upstream driver once: hot-plug with serial = the DataVolume's
// UID on scsi, mkfs.xfs as its node plugin does, a file written, and (unless attached) the
// disk unplugged again, as for a PVC no pod uses at the switch.
func (s *suite) upstreamVolume(t *testing.T, name string, attached bool) (*corev1.PersistentVolumeClaim, *cdiv1.DataVolume, *corev1.PersistentVolume) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(volumeSize, resource.BinarySI)}},
		},
	}
	s.create(t, s.tenant, pvc)
	labels := map[string]string{strings.Split(csiLabel, "=")[0]: cluster}
	dv := upstream.DataVolume(infraNS, pvc.UID, labels, volumeSize, fixture.StorageClass)
	s.create(t, s.mgmt, dv)
	s.eventually(t, "CDI populates the upstream DataVolume", func() (bool, error) {
		err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(dv), dv)
		return dv.Status.Phase == cdiv1.Succeeded, err
	})
	pv := upstream.PV(dv, appNS, pvc.Name, pvc.UID, volumeSize, "xfs")
	s.create(t, s.tenant, pv)

	sub, err := infra.NewSubresources(env.Management.Config, s.scope)
	s.must(t, err)
	vm := &kubevirtv1.VirtualMachine{}
	s.must(t, s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: s.vm}, vm))
	s.must(t, sub.AddVolume(s.ctx, vm, &kubevirtv1.AddVolumeOptions{
		Name: dv.Name,
		Disk: &kubevirtv1.Disk{Name: dv.Name, Serial: string(dv.UID),
			DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusSCSI}}},
		VolumeSource: &kubevirtv1.HotplugVolumeSource{DataVolume: &kubevirtv1.DataVolumeSource{Name: dv.Name, Hotpluggable: true}},
	}))
	link := filepath.Join(simulator.DeviceDir(infraNS, s.vm), "scsi-0QEMU_QEMU_HARDDISK_"+string(dv.UID))
	s.eventually(t, "the upstream-plugged disk appears as "+filepath.Base(link), func() (bool, error) {
		_, err := os.Stat(link)
		return err == nil, nil
	})
	dev, err := filepath.EvalSymlinks(link)
	s.must(t, err)
	mnt := filepath.Join(s.dir, "upstream-mnt-"+name)
	s.must(t, os.MkdirAll(mnt, 0o755))
	for _, cmd := range [][]string{{"mkfs", "-t", "xfs", "-f", dev}, {"mount", "-o", "nouuid", dev, mnt}} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", cmd, err, out)
		}
	}
	werr := os.WriteFile(filepath.Join(mnt, "hello.txt"), []byte(content), 0o644)
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	s.must(t, werr)
	if attached {
		t.Logf("upstream volume %s (serial %s) holds hello.txt and stays attached", dv.Name, dv.UID)
		return pvc, dv, pv
	}
	s.must(t, s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(vm), vm))
	s.must(t, sub.RemoveVolume(s.ctx, vm, dv.Name))
	s.eventually(t, "the upstream disk is unplugged", func() (bool, error) {
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: s.vm}, vmi); err != nil {
			return false, err
		}
		return !slices.ContainsFunc(vmi.Status.VolumeStatus, func(v kubevirtv1.VolumeStatus) bool { return v.Name == dv.Name }), nil
	})
	t.Logf("upstream volume %s (serial %s) holds hello.txt", dv.Name, dv.UID)
	return pvc, dv, pv
}

// adopt runs the adopt binary for the tenant with args and returns its output.
func (s *suite) adopt(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.dir, "adopt"), append([]string{"--config", s.cfgPath, "--upstream-csi-labels", csiLabel}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("adopt %v: %v\n%s", args, err, out.String())
	}
	t.Logf("adopt %v:\n%s", args, out.String())
	return out.String()
}

// switchLoadBalancer starts tenantcloud's ccm and checks that it manages the adopted infra
// Service in place: same name, same address, no second load balancer, updates applied, and
// deleted with the tenant Service.
func (s *suite) switchLoadBalancer(t *testing.T, tsvc, infraSvc *corev1.Service, address string) {
	ccm, err := harness.StartBinary("ccm", filepath.Join(s.dir, "ccm"), filepath.Join(s.dir, "ccm.log"),
		"--config", s.cfgPath, "--v=2",
		"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=250ms",
		"--node-monitor-period=500ms", "--metrics-bind-address=127.0.0.1:0")
	s.must(t, err)
	t.Cleanup(func() {
		if err := ccm.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("ccm log tail:\n%s", ccm.Log(8000))
		}
	})

	// Managed: the ccm's own MetalLB annotation and worker selector on the same object.
	got := &corev1.Service{}
	s.eventually(t, "the ccm manages the adopted infra Service", func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(infraSvc), got); err != nil {
			return false, err
		}
		return got.Annotations[loadbalancer.AnnAddressPool] == pool &&
			got.Spec.Selector[kubevirtv1.AppLabel] == "virt-launcher", nil
	})
	if got.UID != infraSvc.UID {
		t.Fatalf("infra Service %s was re-created (uid %s, was %s)", got.Name, got.UID, infraSvc.UID)
	}
	harness.Consistently(t, s.ctx, 3*time.Second, "the address stays "+address, func(context.Context) error {
		return s.checkAddress(tsvc, infraSvc, address)
	})

	// An update of the tenant Service reaches the adopted infra Service in place.
	s.must(t, s.tenant.Get(s.ctx, client.ObjectKeyFromObject(tsvc), tsvc))
	tsvc.Spec.Ports = append(tsvc.Spec.Ports, corev1.ServicePort{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443})
	s.must(t, s.tenant.Update(s.ctx, tsvc))
	s.eventually(t, "port 443 reaches the adopted infra Service", func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(infraSvc), got); err != nil {
			return false, err
		}
		return slices.ContainsFunc(got.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 443 }), nil
	})
	s.must(t, s.checkAddress(tsvc, infraSvc, address))

	// Deleting the tenant Service deletes the adopted infra Service.
	s.must(t, s.tenant.Delete(s.ctx, tsvc))
	s.eventually(t, "the adopted infra Service is deleted with the tenant Service", func() (bool, error) {
		err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(infraSvc), &corev1.Service{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// checkAddress: the adopted infra Service and the tenant Service both show address, and no
// native infra Service (a second address) exists for the tenant Service.
func (s *suite) checkAddress(tsvc, infraSvc *corev1.Service, address string) error {
	got := &corev1.Service{}
	if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(infraSvc), got); err != nil {
		return err
	}
	if ing := got.Status.LoadBalancer.Ingress; len(ing) != 1 || ing[0].IP != address {
		return fmt.Errorf("infra Service %s has %v, want %s", got.Name, ing, address)
	}
	cur := &corev1.Service{}
	if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(tsvc), cur); err != nil {
		return err
	}
	if ing := cur.Status.LoadBalancer.Ingress; len(ing) != 1 || ing[0].IP != address {
		return fmt.Errorf("tenant Service has %v, want %s", ing, address)
	}
	native, err := loadbalancer.InfraServiceName(tsvc.UID)
	if err != nil {
		return err
	}
	if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: native}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		return fmt.Errorf("a native infra Service %s exists next to the adopted one (%v)", native, err)
	}
	return nil
}

// switchVolume drives the adopted volume through tenantcloud's csi-controller and csi-node as
// the sidecars and the kubelet would, under its legacy handle and the PV's volume context.
func (s *suite) switchVolume(t *testing.T, pvc *corev1.PersistentVolumeClaim, dv *cdiv1.DataVolume, pv *corev1.PersistentVolume) {
	sockDir := filepath.Join(s.dir, "csi")
	s.must(t, os.MkdirAll(sockDir, 0o755))
	ctrl, err := fixture.StartController(env.Management.Config, s.scope, fixture.Storage(), sockDir)
	s.must(t, err)
	t.Cleanup(func() {
		if err := ctrl.Stop(); err != nil {
			t.Errorf("stopping csi-controller: %v", err)
		}
	})
	s.checkLegacyIdentity(t, ctrl)
	cc := ctrl.Controller
	id := pv.Spec.CSI.VolumeHandle
	vc := pv.Spec.CSI.VolumeAttributes
	mountCap := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "xfs"}},
	}

	// Attach (external-attacher).
	pub, err := cc.ControllerPublishVolume(s.call(t), &csi.ControllerPublishVolumeRequest{
		VolumeId: id, NodeId: s.vm, VolumeCapability: mountCap, VolumeContext: vc})
	s.must(t, err)
	if pc := pub.GetPublishContext(); pc[tccsi.PublishContextSerial] != string(dv.UID) || pc[tccsi.PublishContextBus] != tccsi.BusSCSI {
		t.Fatalf("publish context %v, want the upstream serial %s on scsi", pc, dv.UID)
	}

	// Stage and publish (kubelet), with the kubelet's paths for driver csi.kubevirt.io.
	kubelet := filepath.Join(s.dir, "kubelet")
	sum := sha256.Sum256([]byte(id))
	staging := filepath.Join(kubelet, "plugins", "kubernetes.io", "csi", tccsi.LegacyDriverName, hex.EncodeToString(sum[:]), "globalmount")
	target := filepath.Join(kubelet, "pods", "0f0f0f0f-1111-2222-3333-444444444444", "volumes", "kubernetes.io~csi", pv.Name, "mount")
	s.must(t, os.MkdirAll(staging, 0o750))
	s.must(t, os.MkdirAll(target, 0o750))
	ns, err := node.New(node.Options{NodeID: s.vm, DeviceDir: simulator.DeviceDir(infraNS, s.vm), KubeletDir: kubelet, DeviceWaitTimeout: 30 * time.Second})
	s.must(t, err)
	_, err = ns.NodeStageVolume(s.call(t), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging,
		VolumeCapability: mountCap, PublishContext: pub.GetPublishContext(), VolumeContext: vc})
	s.must(t, err)
	_, err = ns.NodePublishVolume(s.call(t), &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: mountCap, PublishContext: pub.GetPublishContext(), VolumeContext: vc})
	s.must(t, err)
	data, err := os.ReadFile(filepath.Join(target, "hello.txt"))
	s.must(t, err)
	if string(data) != content {
		t.Fatalf("read back %q, want %q", data, content)
	}
	t.Logf("read back through tenantcloud: %q", strings.TrimSpace(string(data)))

	// Expand (external-resizer, then the kubelet's NodeExpandVolume): xfs grows online.
	before := fsBytes(t, target)
	exp, err := cc.ControllerExpandVolume(s.call(t), &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: expandedSize}, VolumeCapability: mountCap})
	s.must(t, err)
	if exp.GetCapacityBytes() < expandedSize || !exp.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume = %v", exp)
	}
	_, err = ns.NodeExpandVolume(s.call(t), &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target, StagingTargetPath: staging,
		CapacityRange: &csi.CapacityRange{RequiredBytes: expandedSize}, VolumeCapability: mountCap})
	s.must(t, err)
	if after := fsBytes(t, target); after <= before {
		t.Fatalf("filesystem did not grow: %d → %d bytes", before, after)
	} else {
		t.Logf("filesystem grew from %d to %d bytes", before, after)
	}
	if st, err := ns.NodeGetVolumeStats(s.call(t), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target}); err != nil || len(st.GetUsage()) == 0 {
		t.Fatalf("NodeGetVolumeStats = %v, %v", st, err)
	}

	// Snapshot (external-snapshotter).
	snapID := ""
	s.eventually(t, "a snapshot of the adopted volume is ready", func() (bool, error) {
		rsp, err := cc.CreateSnapshot(s.call(t), &csi.CreateSnapshotRequest{Name: "snapshot-of-" + pvc.Name, SourceVolumeId: id})
		if err != nil {
			return false, err
		}
		snapID = rsp.GetSnapshot().GetSnapshotId()
		if src := rsp.GetSnapshot().GetSourceVolumeId(); src != id {
			return false, fmt.Errorf("snapshot source %q, want %q", src, id)
		}
		return rsp.GetSnapshot().GetReadyToUse(), nil
	})

	// Tear down in the kubelet's and sidecars' order, then delete.
	_, err = ns.NodeUnpublishVolume(s.call(t), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	s.must(t, err)
	_, err = ns.NodeUnstageVolume(s.call(t), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	s.must(t, err)
	_, err = cc.ControllerUnpublishVolume(s.call(t), &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: s.vm})
	s.must(t, err)
	_, err = cc.DeleteSnapshot(s.call(t), &csi.DeleteSnapshotRequest{SnapshotId: snapID})
	s.must(t, err)
	_, err = cc.DeleteVolume(s.call(t), &csi.DeleteVolumeRequest{VolumeId: id})
	s.must(t, err)
	s.eventually(t, "the adopted DataVolume is deleted", func() (bool, error) {
		err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(dv), &cdiv1.DataVolume{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// attachedVolume takes over a volume the upstream driver left attached: its VolumeAttachment
// carries no publish context, so the kubelet stages and publishes it with the PV's volume
// context only; the attacher's repeated publish finds the upstream hot-plug in place; the
// volume is then detached through tenantcloud.
func (s *suite) attachedVolume(t *testing.T, dv *cdiv1.DataVolume, pv *corev1.PersistentVolume) {
	sockDir := filepath.Join(s.dir, "csi-attached")
	s.must(t, os.MkdirAll(sockDir, 0o755))
	ctrl, err := fixture.StartController(env.Management.Config, s.scope, fixture.Storage(), sockDir)
	s.must(t, err)
	t.Cleanup(func() {
		if err := ctrl.Stop(); err != nil {
			t.Errorf("stopping csi-controller: %v", err)
		}
	})
	id, vc := pv.Spec.CSI.VolumeHandle, pv.Spec.CSI.VolumeAttributes
	mountCap := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "xfs"}},
	}
	kubelet := filepath.Join(s.dir, "kubelet-attached")
	staging := filepath.Join(kubelet, "plugins", "kubernetes.io", "csi", tccsi.LegacyDriverName, "attached", "globalmount")
	target := filepath.Join(kubelet, "pods", "1f1f1f1f-1111-2222-3333-444444444444", "volumes", "kubernetes.io~csi", pv.Name, "mount")
	s.must(t, os.MkdirAll(staging, 0o750))
	s.must(t, os.MkdirAll(target, 0o750))
	ns, err := node.New(node.Options{NodeID: s.vm, DeviceDir: simulator.DeviceDir(infraNS, s.vm), KubeletDir: kubelet, DeviceWaitTimeout: 30 * time.Second})
	s.must(t, err)
	_, err = ns.NodeStageVolume(s.call(t), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap, VolumeContext: vc})
	s.must(t, err)
	_, err = ns.NodePublishVolume(s.call(t), &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: mountCap, VolumeContext: vc})
	s.must(t, err)
	data, err := os.ReadFile(filepath.Join(target, "hello.txt"))
	s.must(t, err)
	if string(data) != content {
		t.Fatalf("read back %q, want %q", data, content)
	}
	// Calls without any context find the disk by its mount.
	if st, err := ns.NodeGetVolumeStats(s.call(t), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target}); err != nil || len(st.GetUsage()) == 0 {
		t.Fatalf("NodeGetVolumeStats = %v, %v", st, err)
	}
	pub, err := ctrl.Controller.ControllerPublishVolume(s.call(t), &csi.ControllerPublishVolumeRequest{
		VolumeId: id, NodeId: s.vm, VolumeCapability: mountCap, VolumeContext: vc})
	s.must(t, err)
	if got := pub.GetPublishContext()[tccsi.PublishContextSerial]; got != string(dv.UID) {
		t.Fatalf("repeated publish: serial %q, want the upstream %s", got, dv.UID)
	}
	_, err = ns.NodeUnpublishVolume(s.call(t), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	s.must(t, err)
	_, err = ns.NodeUnstageVolume(s.call(t), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	s.must(t, err)
	_, err = ctrl.Controller.ControllerUnpublishVolume(s.call(t), &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: s.vm})
	s.must(t, err)
	vmi := &kubevirtv1.VirtualMachineInstance{}
	s.must(t, s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: s.vm}, vmi))
	if slices.ContainsFunc(vmi.Status.VolumeStatus, func(v kubevirtv1.VolumeStatus) bool { return v.Name == id }) {
		t.Fatalf("the upstream hot-plug of %s is still in VMI %s after unpublish", id, s.vm)
	}
}

// checkLegacyIdentity serves the controller under the upstream driver name too, as the chart
// does for the second set of sidecars, and checks what they would read.
func (s *suite) checkLegacyIdentity(t *testing.T, ctrl *fixture.Controller) {
	ctx, cancel := context.WithCancel(s.ctx)
	endpoint := "unix://" + filepath.Join(s.dir, "csi", "legacy.sock")
	served := make(chan error, 1)
	go func() { served <- tccsi.Serve(ctx, endpoint, ctrl.Server.RegisterLegacy) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("legacy endpoint: %v", err)
		}
	})
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	s.must(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	info, err := csi.NewIdentityClient(conn).GetPluginInfo(s.call(t), &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	s.must(t, err)
	if info.GetName() != tccsi.LegacyDriverName {
		t.Fatalf("legacy endpoint reports driver %q, want %q", info.GetName(), tccsi.LegacyDriverName)
	}
}

// hasRow reports whether a line of out starts with the given whitespace-separated fields.
func hasRow(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

func fsBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

func (s *suite) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (s *suite) create(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(s.ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func (s *suite) eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	harness.Eventually(t, s.ctx, waitTimeout, what, func(context.Context) (bool, error) { return cond() })
}

func (s *suite) call(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	t.Cleanup(cancel)
	return ctx
}
