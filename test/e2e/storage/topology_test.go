package storage

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

// Volume topology (issue 18 item 1) on real nodes. The world runs with it on, as an operator
// turns it on: storage.topology in csi-controller's config (topologyStorage), the ccm with
// --node-zones, csi-provisioner with the flags the management chart renders then (its Topology
// feature gate, chartSidecarArgs) and csi-node with the tenant chart's topology.enabled
// (--require-zone). The simulator puts the two worker VMs on its least-loaded infra nodes,
// infra-a and infra-b, in zones zone-a and zone-b, so each real node is in a zone of its own.

const (
	zoneA, zoneB = "zone-a", "zone-b"
	// selectedNode is the annotation kube-scheduler puts on a WaitForFirstConsumer claim for
	// the provisioner.
	selectedNode = "volume.kubernetes.io/selected-node"
)

// topologyStorage is the world's storage grant: the fixture's, with a zonal class
// (fixture.ZonalStorageClass: each volume in zone-a or zone-b, on that zone's infra class) and
// fixture.FixedStorageClass reaching zone-a only. The default class is not listed, so it
// reaches every zone and the other stories see no topology.
func topologyStorage() config.Storage { return fixture.TopologyStorage(zoneA, zoneA, zoneB) }

// topologyChartSets are the management chart values (helm --set) giving the chart st's grant
// and topology, so it renders the sidecars as it does for such a tenant.
func topologyChartSets(st config.Storage) []string {
	sets := []string{"ccm.nodeZones=true", "config.storage.allowedStorageClasses={" + strings.Join(st.AllowedStorageClasses, ",") + "}"}
	for _, class := range slices.Sorted(maps.Keys(st.Topology)) {
		ct := st.Topology[class]
		if len(ct.Zones) > 0 {
			sets = append(sets, fmt.Sprintf("config.storage.topology.%s.zones={%s}", class, strings.Join(ct.Zones, ",")))
		}
		for _, zone := range slices.Sorted(maps.Keys(ct.ZoneStorageClasses)) {
			sets = append(sets, fmt.Sprintf("config.storage.topology.%s.zoneStorageClasses.%s=%s", class, zone, ct.ZoneStorageClasses[zone]))
		}
	}
	return sets
}

// TestVolumeTopologyWaitForFirstConsumer: a WaitForFirstConsumer class on the zonal infra class
// provisions each claim in the zone of the node its pod was scheduled to — the PV's node
// affinity names that zone only, the DataVolume uses that zone's infra StorageClass — and the
// pod runs there and writes to the volume, hot-plugged into that node's VM. Both zones, so a
// placement ignoring the pod's zone fails one of them.
func TestVolumeTopologyWaitForFirstConsumer(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	// Not deferred: the parallel subtests run after this function returns.
	t.Cleanup(cancel)
	nodes := zoneNodes(t, ctx, w)
	if args, err := chartSidecarArgs(ctx, env.Assets.BinDir+"/helm", "csi-provisioner"); err != nil || !slices.Contains(args["csi-provisioner"], "--feature-gates=Topology=true") {
		t.Fatalf("the chart renders csi-provisioner %v (%v), want the Topology feature gate", args["csi-provisioner"], err)
	}
	zonal := userClass("topology-zonal", fixture.ZonalStorageClass, storagev1.VolumeBindingWaitForFirstConsumer)
	create(t, ctx, zonal)
	ns := userNamespace(t, ctx, "topology-wffc")
	for _, zone := range []string{zoneA, zoneB} {
		t.Run(zone, func(t *testing.T) {
			t.Parallel()
			n := nodes[zone]
			start := time.Now()
			pvc := userClaim(t, ctx, ns, "data-"+zone, zonal.Name, false)
			text := "written-in-" + zone
			pod := userPod(t, ctx, pvc, "app-"+zone, n.Name, "fs", "/data", text)
			t.Logf("PVC + pod pinned to %s (%s) → Running with its volume: %s", n.Name, zone, time.Since(start).Round(time.Millisecond))
			pv := getPV(t, ctx, pvc.Spec.VolumeName)
			if got := pvZones(pv); !slices.Equal(got, []string{zone}) {
				t.Errorf("PV %s node affinity zones %v, want [%s]", pv.Name, got, zone)
			}
			if dv := dataVolumeOf(t, ctx, pv); ptr.Deref(dv.Spec.Storage.StorageClassName, "") != fixture.ZoneStorageClass(zone) {
				t.Errorf("DataVolume %s on infra StorageClass %q, want %s", dv.Name, ptr.Deref(dv.Spec.Storage.StorageClassName, ""), fixture.ZoneStorageClass(zone))
			}
			if line, want := podReport(t, ctx, n, pod), "ok fs /data/volprobe.txt ext4 "+text; line != want {
				t.Errorf("pod reports %q, want %q", line, want)
			}
			if serial := attachedSerial(t, ctx, pv.Name, n.Name); !w.plugged(n.Name, serial) {
				t.Errorf("PV %s: attached serial %q; disks of VM %s: %v", pv.Name, serial, n.Name, w.sim.Disks.Disks(infraNS, n.Name))
			}
		})
	}
}

// TestVolumeTopologyPodInOtherZone: a pod pinned to zone-b never gets a volume only zone-a
// reaches (fixture.FixedStorageClass). With the zones in the tenant StorageClass's
// allowedTopologies, kube-scheduler refuses zone-b's node for the claim, the pod stays Pending
// with its reason and nothing is provisioned: no selected node on the claim, no DataVolume.
// Without them (a class the tenant wrote) the provisioner is asked, the volume is made where
// its class reaches (zone-a) and bound, and the pod stays Pending with the scheduler's volume
// node affinity conflict: nothing is attached to or plugged into zone-b's VM, and deleting the
// claim leaves no DataVolume.
func TestVolumeTopologyPodInOtherZone(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	nodes := zoneNodes(t, ctx, w)

	t.Run("allowedTopologies", func(t *testing.T) {
		class := userClass("topology-zone-a-allowed", fixture.FixedStorageClass, storagev1.VolumeBindingWaitForFirstConsumer)
		class.AllowedTopologies = []corev1.TopologySelectorTerm{{MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{
			{Key: corev1.LabelTopologyZone, Values: []string{zoneA}}}}}
		create(t, ctx, class)
		pvc, pod := claimAndPodIn(t, ctx, "topology-allowed", class.Name, zoneB)
		msg := waitUnschedulable(t, ctx, pod, "didn't find available persistent volumes to bind")
		t.Logf("pod Pending: %s", msg)
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil {
			t.Fatal(err)
		}
		if pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.VolumeName != "" || pvc.Annotations[selectedNode] != "" {
			t.Errorf("claim %s with volume %q and selected node %q, want Pending, neither set", pvc.Status.Phase, pvc.Spec.VolumeName, pvc.Annotations[selectedNode])
		}
		if dvs := claimDataVolumes(t, ctx, pvc.Namespace); len(dvs) > 0 {
			t.Errorf("DataVolumes %v made for a claim no node may use", dvs)
		}
	})

	t.Run("no_allowedTopologies", func(t *testing.T) {
		b := nodes[zoneB]
		class := userClass("topology-zone-a", fixture.FixedStorageClass, storagev1.VolumeBindingWaitForFirstConsumer)
		create(t, ctx, class)
		pvc, pod := claimAndPodIn(t, ctx, "topology-elsewhere", class.Name, zoneB)
		// The first refusal is PreBind's (the new PV does not fit the node it waited for), the
		// next ones the filter's; either names the volume's node affinity.
		msg := waitUnschedulable(t, ctx, pod, "volume node affinity conflict", "node affinity doesn't match")
		t.Logf("pod Pending: %s", msg)
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil {
			t.Fatal(err)
		}
		pv := getPV(t, ctx, pvc.Spec.VolumeName)
		if got := pvZones(pv); !slices.Equal(got, []string{zoneA}) {
			t.Errorf("PV %s node affinity zones %v, want [%s]", pv.Name, got, zoneA)
		}
		serial := tccsi.Serial(pv.Spec.CSI.VolumeHandle)
		if vas := volumeAttachments(t, ctx, pv.Name); len(vas) > 0 {
			t.Errorf("PV %s has VolumeAttachments %v, want none", pv.Name, vas)
		}
		if w.plugged(b.Name, serial) {
			t.Errorf("disk %s of the zone-a volume is plugged into %s in zone-b", serial, b.Name)
		}
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil || pod.Status.Phase != corev1.PodPending || pod.Spec.NodeName != "" {
			t.Errorf("pod %s on %q (%v), want Pending and unscheduled", pod.Status.Phase, pod.Spec.NodeName, err)
		}
		deleteAndWait(t, pod)
		deleteAndWait(t, pvc)
		harness.Eventually(t, ctx, volumeWait, "the claim's DataVolume deleted", func(ctx context.Context) (bool, error) {
			return len(claimDataVolumes(t, ctx, pvc.Namespace)) == 0, nil
		})
	})
}

// claimAndPodIn creates, in a new namespace named after prefix, a claim "data" of class and a
// pod "app" using it that may run only in zone (a nodeSelector on the ccm's zone label).
func claimAndPodIn(t testing.TB, ctx context.Context, prefix, class, zone string) (*corev1.PersistentVolumeClaim, *corev1.Pod) {
	t.Helper()
	pvc := userClaim(t, ctx, userNamespace(t, ctx, prefix), "data", class, false)
	pod := probePod(pvc, "app", "fs", "/data", "never")
	pod.Spec.NodeSelector = map[string]string{corev1.LabelTopologyZone: zone}
	create(t, ctx, pod)
	return pvc, pod
}

// TestVolumeTopologyImmediate: an Immediate class's volume is provisioned before any pod
// exists, in a zone its class reaches (zone-a for the pinned class, one zone of the zonal
// class's); its PV's node affinity then makes kube-scheduler put the pod on the node of that
// zone, although the pod prefers the other node.
func TestVolumeTopologyImmediate(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	// Not deferred: the parallel subtests run after this function returns.
	t.Cleanup(cancel)
	nodes := zoneNodes(t, ctx, w)
	ns := userNamespace(t, ctx, "topology-now")
	for _, tcase := range []struct {
		name, infraClass string
		zones            []string // the zones the volume may land in
	}{
		{"pinned", fixture.FixedStorageClass, []string{zoneA}},
		{"zonal", fixture.ZonalStorageClass, []string{zoneA, zoneB}},
	} {
		t.Run(tcase.name, func(t *testing.T) {
			t.Parallel()
			class := userClass("topology-now-"+tcase.name, tcase.infraClass, storagev1.VolumeBindingImmediate)
			create(t, ctx, class)
			start := time.Now()
			pvc := userClaim(t, ctx, ns, "data-"+tcase.name, class.Name, false)
			harness.Eventually(t, ctx, volumeWait, "claim "+pvc.Name+" Bound", func(ctx context.Context) (bool, error) {
				err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc)
				return pvc.Status.Phase == corev1.ClaimBound, err
			})
			t.Logf("claim Bound without a pod: %s", time.Since(start).Round(time.Millisecond))
			pv := getPV(t, ctx, pvc.Spec.VolumeName)
			zones := pvZones(pv)
			if len(zones) != 1 || !slices.Contains(tcase.zones, zones[0]) {
				t.Fatalf("PV %s node affinity zones %v, want one of %v", pv.Name, zones, tcase.zones)
			}
			zone := zones[0]
			if tcase.infraClass == fixture.ZonalStorageClass {
				if dv := dataVolumeOf(t, ctx, pv); ptr.Deref(dv.Spec.Storage.StorageClassName, "") != fixture.ZoneStorageClass(zone) {
					t.Errorf("DataVolume %s on infra StorageClass %q, want %s", dv.Name, ptr.Deref(dv.Spec.Storage.StorageClassName, ""), fixture.ZoneStorageClass(zone))
				}
			}
			other := nodes[zoneA]
			if zone == zoneA {
				other = nodes[zoneB]
			}
			text := "written-by-" + tcase.name
			pod := probePod(pvc, "app-"+tcase.name, "fs", "/data", text)
			pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
				Weight: 100, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
					{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{other.Name}}}}}}}}
			create(t, ctx, pod)
			waitRunning(t, ctx, pod, pvc)
			if want := nodes[zone].Name; pod.Spec.NodeName != want {
				t.Fatalf("pod of a %s volume runs on %s, want %s", zone, pod.Spec.NodeName, want)
			}
			if line, want := podReport(t, ctx, nodes[zone], pod), "ok fs /data/volprobe.txt ext4 "+text; line != want {
				t.Errorf("pod reports %q, want %q", line, want)
			}
		})
	}
}

// zoneNodes maps zone-a and zone-b to the world's real node in each, from the zone labels on
// the tenant Nodes (the ccm's, from the infra Node running the VM), and checks the kubelet
// registered the zone as our driver's topology key: external-provisioner sends the zones of
// the nodes whose CSINode has it.
func zoneNodes(t testing.TB, ctx context.Context, w *world) map[string]*node.Node {
	t.Helper()
	out := map[string]*node.Node{}
	for _, n := range w.nodes {
		kn := &corev1.Node{}
		if err := env.Tenant.Client.Get(ctx, client.ObjectKey{Name: n.Name}, kn); err != nil {
			t.Fatal(err)
		}
		out[kn.Labels[corev1.LabelTopologyZone]] = n
		cn := &storagev1.CSINode{}
		if err := env.Tenant.Client.Get(ctx, client.ObjectKey{Name: n.Name}, cn); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(cn.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == tccsi.DriverName })
		if i < 0 || !slices.Contains(cn.Spec.Drivers[i].TopologyKeys, corev1.LabelTopologyZone) {
			t.Fatalf("CSINode %s: our driver without the zone topology key: %+v", n.Name, cn.Spec.Drivers)
		}
	}
	if out[zoneA] == nil || out[zoneB] == nil {
		t.Fatalf("nodes by zone %v, want one in %s and one in %s", slices.Collect(maps.Keys(out)), zoneA, zoneB)
	}
	return out
}

// userClass is a StorageClass of ours for infra class infraClass, bound in mode.
func userClass(name, infraClass string, mode storagev1.VolumeBindingMode) *storagev1.StorageClass {
	sc := immediateClass(name, infraClass)
	sc.VolumeBindingMode = &mode
	return sc
}

func getPV(t testing.TB, ctx context.Context, name string) *corev1.PersistentVolume {
	t.Helper()
	pv := &corev1.PersistentVolume{}
	if err := env.Tenant.Client.Get(ctx, client.ObjectKey{Name: name}, pv); err != nil {
		t.Fatalf("PV %q: %v", name, err)
	}
	return pv
}

// pvZones are the zones of pv's required node affinity (what external-provisioner made of
// the volume's accessible_topology), sorted.
func pvZones(pv *corev1.PersistentVolume) []string {
	var zones []string
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return nil
	}
	for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == corev1.LabelTopologyZone && e.Operator == corev1.NodeSelectorOpIn {
				zones = append(zones, e.Values...)
			}
		}
	}
	slices.Sort(zones)
	return slices.Compact(zones)
}

// dataVolumeOf is the DataVolume behind pv (its handle is the DataVolume's name).
func dataVolumeOf(t testing.TB, ctx context.Context, pv *corev1.PersistentVolume) *cdiv1.DataVolume {
	t.Helper()
	dv := &cdiv1.DataVolume{}
	if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: infraNS, Name: pv.Spec.CSI.VolumeHandle}, dv); err != nil {
		t.Fatalf("DataVolume of PV %s: %v", pv.Name, err)
	}
	return dv
}

// claimDataVolumes names the DataVolumes not being deleted that were made for claims of
// namespace ns (the provisioner passes the claim to csi-controller, which annotates it).
func claimDataVolumes(t testing.TB, ctx context.Context, ns string) []string {
	t.Helper()
	dvs := &cdiv1.DataVolumeList{}
	if err := env.Management.Client.List(ctx, dvs, client.InNamespace(infraNS)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, dv := range dvs.Items {
		if strings.HasPrefix(dv.Annotations[controller.AnnTenantClaim], ns+"/") && dv.DeletionTimestamp == nil {
			out = append(out, dv.Name)
		}
	}
	return out
}

// volumeAttachments names the VolumeAttachments of PV pv, attached or not.
func volumeAttachments(t testing.TB, ctx context.Context, pv string) []string {
	t.Helper()
	vas := &storagev1.VolumeAttachmentList{}
	if err := env.Tenant.Client.List(ctx, vas); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, va := range vas.Items {
		if ptr.Deref(va.Spec.Source.PersistentVolumeName, "") == pv {
			out = append(out, va.Name+" on "+va.Spec.NodeName)
		}
	}
	return out
}

// waitUnschedulable waits until kube-scheduler says pod is unschedulable with a message
// containing one of wants, and returns the message.
func waitUnschedulable(t testing.TB, ctx context.Context, pod *corev1.Pod, wants ...string) string {
	t.Helper()
	var msg string
	harness.Eventually(t, ctx, volumeWait, "pod "+pod.Name+" unschedulable with "+strings.Join(wants, " or "), func(ctx context.Context) (bool, error) {
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		if pod.Spec.NodeName != "" {
			t.Fatalf("pod %s scheduled to %s, want it unschedulable", pod.Name, pod.Spec.NodeName)
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				msg = c.Message
				return slices.ContainsFunc(wants, func(w string) bool { return strings.Contains(msg, w) }), nil
			}
		}
		return false, nil
	})
	return msg
}
