package security_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// infraState is what no refused request may change: for every infra object of the kinds an
// attack could reach, in both tenant namespaces, its resourceVersion (any write changes it);
// for VMIs, whose status the simulator keeps writing, the hot-plugged volumes and their
// phases instead.
type infraState map[string]string

// infraKinds are the lists read, by the name used in the state's keys.
var infraKinds = []struct {
	kind string
	list func() client.ObjectList
}{
	{"DataVolume", func() client.ObjectList { return &cdiv1.DataVolumeList{} }},
	{"PVC", func() client.ObjectList { return &corev1.PersistentVolumeClaimList{} }},
	{"VM", func() client.ObjectList { return &kubevirtv1.VirtualMachineList{} }},
	{"Service", func() client.ObjectList { return &corev1.ServiceList{} }},
	{"EndpointSlice", func() client.ObjectList { return &discoveryv1.EndpointSliceList{} }},
	{"MachineDeployment", func() client.ObjectList { return &clusterv1.MachineDeploymentList{} }},
	{"Machine", func() client.ObjectList { return &clusterv1.MachineList{} }},
	{"VolumeSnapshot", func() client.ObjectList { return infra.NewVolumeSnapshotList() }},
}

// snapshot reads the infra state.
func (w *world) snapshot(t *testing.T) infraState {
	t.Helper()
	s := infraState{}
	for _, ns := range []string{infraNS, otherNS} {
		for _, k := range infraKinds {
			list := k.list()
			if err := w.mgmt.List(w.ctx, list, client.InNamespace(ns)); err != nil {
				t.Fatalf("listing %ss in %s: %v", k.kind, ns, err)
			}
			err := meta.EachListItem(list, func(o runtime.Object) error {
				obj := o.(client.Object)
				s[key(k.kind, obj)] = obj.GetResourceVersion()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		var vmis kubevirtv1.VirtualMachineInstanceList
		if err := w.mgmt.List(w.ctx, &vmis, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for i := range vmis.Items {
			vmi := &vmis.Items[i]
			var vols []string
			for _, v := range vmi.Spec.Volumes {
				vols = append(vols, "spec:"+v.Name)
			}
			for _, st := range vmi.Status.VolumeStatus {
				vols = append(vols, st.Name+"="+string(st.Phase))
			}
			sort.Strings(vols)
			s[key("VMI", vmi)] = strings.Join(vols, ",")
		}
	}
	return s
}

func key(kind string, obj client.Object) string {
	return kind + " " + obj.GetNamespace() + "/" + obj.GetName()
}

// diff lists what changed from s to after, leaving out the keys allowed to change (the infra
// objects a row legitimately creates, e.g. the load balancer of an accepted Service).
func (s infraState) diff(after infraState, allowed ...string) []string {
	ok := map[string]bool{}
	for _, k := range allowed {
		ok[k] = true
	}
	var out []string
	for k, v := range s {
		switch a, found := after[k]; {
		case ok[k]:
		case !found:
			out = append(out, "deleted "+k)
		case a != v:
			out = append(out, fmt.Sprintf("changed %s (%s → %s)", k, v, a))
		}
	}
	for k := range after {
		if _, found := s[k]; !found && !ok[k] {
			out = append(out, "created "+k)
		}
	}
	sort.Strings(out)
	return out
}
