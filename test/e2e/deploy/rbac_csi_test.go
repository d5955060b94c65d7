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

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/kubevirt"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/cdi"
	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
)

// Infra classes of the csi-controller proof.
const (
	csiStorageClass  = "deploy-linstor"
	csiSnapshotClass = "deploy-snapshots"
)

// TestCSIControllerChartRBAC runs the real csi-controller binary with the chart's rendered
// args and config, as the chart's ServiceAccount bound to exactly the chart's Role, and drives
// the sidecars' calls through its socket: create, publish, expand, snapshot, list, unpublish,
// delete, with the Events it records. Then it removes each permission of the Role in turn and
// records which named scenario fails. It does so for both hot-plug modes: through virt-api's
// subresources (the default) and declaratively (config.storage.hotplug=declarative, the
// simulated KubeVirt with DeclarativeHotplugVolumes alone), where the Role trades the
// subresources for patch on VMs.
func TestCSIControllerChartRBAC(t *testing.T) {
	for _, mode := range []config.Hotplug{config.HotplugSubresource, config.HotplugDeclarative} {
		t.Run("hotplug="+string(mode), func(t *testing.T) { csiControllerChartRBAC(t, mode) })
	}
}

func csiControllerChartRBAC(t *testing.T, mode config.Hotplug) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns, vm := "deploy-rbac-csi", "csi-w1"
	declarative := mode == config.HotplugDeclarative
	if declarative {
		ns += "-decl"
		si.Gates.Set(featuregate.DeclarativeHotplugVolumes)
		t.Cleanup(func() { si.Gates.Set(featuregate.HotplugVolumes) })
	}
	mgmt := env.Management.Client
	createNamespace(t, ctx, mgmt, ns)
	ensureStorageClasses(t, ctx, mgmt)
	must(t, fixture.CreateRunningVM(ctx, mgmt, ns, simCluster, vm, ""))
	must(t, mgmt.Create(ctx, capi.NewCluster(ns, simCluster)))

	objs := render(t, "tenantcloud", ns,
		"clusterName="+simCluster,
		"config.storage.defaultStorageClass="+csiStorageClass,
		"config.storage.defaultSnapshotClass="+csiSnapshotClass,
		"config.storage.hotplug="+string(mode),
	)
	name := release + "-csi-controller"
	g, u := bindChartRole(t, ctx, env.Management, "management", ns, objs, "Role", name)
	dir := t.TempDir()
	cfg := localConfig(t, objs, dir, u.Kubeconfig, filepath.Join(dir, "unused-tenant-kubeconfig"))
	sock := filepath.Join(dir, "csi.sock")
	args := chartrender.LocalArgs(containerArgs(t, objs, "Deployment", name, "csi-controller"), map[string]string{
		"--config": cfg, "--endpoint": "unix://" + sock,
		"--metrics-bind-address": "0", // the pod's port would clash with other tests' processes
	})
	bin := filepath.Join(programs(t), "csi-controller")

	kv, err := kubevirt.NewForConfig(env.Management.Config)
	must(t, err)
	runs := 0
	var cc csi.ControllerClient
	var ids csi.IdentityClient
	var conn *grpc.ClientConn
	vol, snap := "", ""
	p := &proof{
		grants:   []*grant{g},
		clusters: []*harness.Cluster{env.Management},
		start: func(ctx context.Context) (*component, error) {
			runs++
			vol, snap = "", ""
			c, err := startBinary(dir, "csi-controller", bin, args...)
			if err != nil {
				return nil, err
			}
			conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			cc, ids = csi.NewControllerClient(conn), csi.NewIdentityClient(conn)
			return c, nil
		},
		reset: func(ctx context.Context) error {
			_ = conn.Close()
			return deleteVolumes(ctx, ns)
		},
		unexercised: map[perm]string{
			{"events.k8s.io", "events", "patch"}: "the events library PATCHes an Event into a series only when an isomorphic one " +
				"(same regarding and related objects at the same resourceVersion) repeats; every csi-controller Event follows " +
				"a write to those objects, so none repeats here. Kept so a repeat is counted, not refused.",
		},
	}
	rwo := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	}
	p.scenarios = []scenario{
		{"Start (caches sync, Probe ready)", func(ctx context.Context, c *component) error {
			return c.await(ctx, "Probe ready", func(ctx context.Context) (bool, error) {
				rsp, err := ids.Probe(ctx, &csi.ProbeRequest{})
				return err == nil && rsp.GetReady().GetValue(), err
			})
		}},
		{"CreateVolume", func(ctx context.Context, c *component) error {
			rsp, err := cc.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-rbac-" + strconv.Itoa(runs),
				VolumeCapabilities: []*csi.VolumeCapability{rwo}, CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20}})
			vol = rsp.GetVolume().GetVolumeId()
			return c.check("CreateVolume", err)
		}},
		{"DataVolume owned by the tenant's Cluster (garbage-collected with it)", func(ctx context.Context, c *component) error {
			return ownedByCluster(ctx, &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: vol}})
		}},
		{"ControllerPublishVolume", func(ctx context.Context, c *component) error {
			_, err := cc.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: vol, NodeId: vm, VolumeCapability: rwo})
			return c.check("ControllerPublishVolume", err)
		}},
		{"Published Event recorded", func(ctx context.Context, c *component) error {
			return c.await(ctx, "Published Event on the DataVolume", func(ctx context.Context) (bool, error) {
				return hasEvent(ctx, ns, vol, "Published")
			})
		}},
		{"ControllerExpandVolume", func(ctx context.Context, c *component) error {
			_, err := cc.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}})
			return c.check("ControllerExpandVolume", err)
		}},
		{"CreateSnapshot", func(ctx context.Context, c *component) error {
			rsp, err := cc.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-rbac-" + strconv.Itoa(runs), SourceVolumeId: vol})
			snap = rsp.GetSnapshot().GetSnapshotId()
			if err == nil && !rsp.GetSnapshot().GetReadyToUse() {
				err = fmt.Errorf("snapshot %s not ready to use", snap)
			}
			return c.check("CreateSnapshot", err)
		}},
		{"ListVolumes + ListSnapshots", func(ctx context.Context, c *component) error {
			_, err := cc.ListVolumes(ctx, &csi.ListVolumesRequest{})
			if err == nil {
				_, err = cc.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
			}
			return c.check("ListVolumes + ListSnapshots", err)
		}},
		{"ControllerUnpublishVolume", func(ctx context.Context, c *component) error {
			_, err := cc.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: vol, NodeId: vm})
			return c.check("ControllerUnpublishVolume", err)
		}},
		// The repairs of a half-applied hot-plug, set up by hand (as admin) the way a
		// crash between virt-api's VM and VMI writes leaves them.
		{"Unpublish repairs a VMI-only hot-plug", func(ctx context.Context, c *component) error {
			if err := virtAPIRetry(func() error {
				return kv.KubevirtV1().VirtualMachineInstances(ns).AddVolume(ctx, vm, hotplugOptions(vol))
			}); err != nil {
				return fmt.Errorf("%w: VMI-level addvolume: %w", errSetup, err)
			}
			// Attached (phase Ready) before the call, so the controller's cache has it.
			if err := waitFor(ctx, "VMI-only hot-plug Ready", func(ctx context.Context) (bool, error) {
				return vmiVolumeReady(ctx, ns, vm, vol)
			}); err != nil {
				return fmt.Errorf("%w: %w", errSetup, err)
			}
			_, err := cc.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: vol, NodeId: vm})
			if err := c.check("ControllerUnpublishVolume of a VMI-only hot-plug", err); err != nil {
				return err
			}
			return c.await(ctx, "the VMI lets go of the volume", func(ctx context.Context) (bool, error) {
				vmi := &kubevirtv1.VirtualMachineInstance{}
				if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: vm}, vmi); err != nil {
					return false, err
				}
				return !slices.ContainsFunc(vmi.Spec.Volumes, func(v kubevirtv1.Volume) bool { return v.Name == vol }), nil
			})
		}},
		{"Publish repairs a VM-only hot-plug", func(ctx context.Context, c *component) error {
			if err := virtAPIRetry(func() error { return kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctx, vm, hotplugOptions(vol)) }); err != nil {
				return fmt.Errorf("%w: VM-level addvolume: %w", errSetup, err)
			}
			if err := virtAPIRetry(func() error {
				return kv.KubevirtV1().VirtualMachineInstances(ns).RemoveVolume(ctx, vm, &kubevirtv1.RemoveVolumeOptions{Name: vol})
			}); err != nil {
				return fmt.Errorf("%w: VMI-level removevolume: %w", errSetup, err)
			}
			_, err := cc.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: vol, NodeId: vm, VolumeCapability: rwo})
			if err := c.check("ControllerPublishVolume of a VM-only hot-plug", err); err != nil {
				return err
			}
			_, err = cc.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: vol, NodeId: vm})
			return c.check("ControllerUnpublishVolume", err)
		}},
	}
	if declarative {
		// The repairs above are the subresource path's: with DeclarativeHotplugVolumes KubeVirt
		// refuses VMI-level requests on a VM's VMI and repairs such a VMI itself.
		p.scenarios = slices.DeleteFunc(p.scenarios, func(sc scenario) bool { return strings.Contains(sc.name, " repairs ") })
	}
	p.scenarios = append(p.scenarios, []scenario{
		{"DeleteSnapshot", func(ctx context.Context, c *component) error {
			_, err := cc.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap})
			return c.check("DeleteSnapshot", err)
		}},
		{"DeleteVolume", func(ctx context.Context, c *component) error {
			_, err := cc.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol})
			return c.check("DeleteVolume", err)
		}},
	}...)
	p.run(t, ctx)
}

// ownedByCluster checks, as admin, that obj carries an owner reference to this incarnation of
// the simulator's Cluster in its namespace.
func ownedByCluster(ctx context.Context, obj client.Object) error {
	c := env.Management.Client
	cl := &clusterv1.Cluster{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: simCluster}, cl); err != nil {
		return fmt.Errorf("%w: the Cluster: %w", errSetup, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return err
	}
	want := *infra.ClusterOwner(cl.Name, cl.UID)
	if !slices.Contains(obj.GetOwnerReferences(), want) {
		return fmt.Errorf("%T %s: owner references %v, want %v", obj, client.ObjectKeyFromObject(obj), obj.GetOwnerReferences(), want)
	}
	return nil
}

// vmiVolumeReady reports whether the VMI's volume is attached (volumeStatus phase Ready).
func vmiVolumeReady(ctx context.Context, ns, name, volume string) (bool, error) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vmi); err != nil {
		return false, err
	}
	return slices.ContainsFunc(vmi.Status.VolumeStatus, func(st kubevirtv1.VolumeStatus) bool {
		return st.Name == volume && st.Phase == kubevirtv1.VolumeReady
	}), nil
}

// hotplugOptions are the options csi-controller hot-plugs volume id with.
func hotplugOptions(id string) *kubevirtv1.AddVolumeOptions {
	return &kubevirtv1.AddVolumeOptions{
		Name: id,
		Disk: &kubevirtv1.Disk{Name: id, Serial: tccsi.Serial(id),
			DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusSCSI}}},
		VolumeSource: &kubevirtv1.HotplugVolumeSource{DataVolume: &kubevirtv1.DataVolumeSource{Name: id, Hotpluggable: true}},
	}
}

// check turns a CSI call's result into the scenario's: the call's error, or an RBAC refusal
// the component logged while serving it.
func (c *component) check(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if r := c.refused(); r != "" {
		return fmt.Errorf("%s: refused: %s", what, r)
	}
	return nil
}

func hasEvent(ctx context.Context, ns, regarding, reason string) (bool, error) {
	e, err := findEvent(ctx, ns, regarding, reason)
	return e != nil, err
}

func findEvent(ctx context.Context, ns, regarding, reason string) (*eventsv1.Event, error) {
	var evs eventsv1.EventList
	if err := env.Management.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for i, e := range evs.Items {
		if e.Reason == reason && e.Regarding.Name == regarding {
			return &evs.Items[i], nil
		}
	}
	return nil, nil
}

// ensureStorageClasses creates the infra StorageClass and VolumeSnapshotClass the proof's
// config grants (the simulated CDI/LINSTOR serves them).
func ensureStorageClasses(t *testing.T, ctx context.Context, c client.Client) {
	t.Helper()
	yes := true
	immediate := storagev1.VolumeBindingImmediate
	vsc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
		"metadata": map[string]any{"name": csiSnapshotClass}, "driver": cdi.Driver, "deletionPolicy": "Delete",
	}}
	for _, o := range []client.Object{
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: csiStorageClass}, Provisioner: cdi.Driver,
			AllowVolumeExpansion: &yes, VolumeBindingMode: &immediate},
		vsc,
	} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// deleteVolumes removes, as admin, what a run left: snapshots and DataVolumes of ns.
func deleteVolumes(ctx context.Context, ns string) error {
	c := env.Management.Client
	if err := c.DeleteAllOf(ctx, infra.NewVolumeSnapshot(), client.InNamespace(ns)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting snapshots: %w", err)
	}
	if err := c.DeleteAllOf(ctx, &cdiv1.DataVolume{}, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("deleting DataVolumes: %w", err)
	}
	return nil
}

// virtAPIRetry repeats a hand-made hot-plug step while virt-api answers that the VMI changed
// under it: like KubeVirt's, the simulator's virt-api reports its own write conflict as an
// Internal error, and the simulated virt-handler writes the VMI all the time.
func virtAPIRetry(call func() error) error {
	return retry.OnError(retry.DefaultBackoff, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsInternalError(err)
	}, call)
}
