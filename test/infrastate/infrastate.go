// Package infrastate snapshots the management-cluster objects a tenant's requests could reach
// and diffs two snapshots, so that a test can assert that a refused request (an attack, a
// crashed or repeated operation) changed nothing, or exactly what it was allowed to change.
package infrastate

import (
	"context"
	"fmt"
	"sort"
	"strings"

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

// State maps "<Kind> <namespace>/<name>" to the object's resourceVersion (any write changes
// it). VMIs are the exception: their status is rewritten all the time, so their entry is the
// list of volumes and hot-plug phases instead, which only a hot-plug changes.
type State map[string]string

// kinds are the lists Take reads, by the kind name used in keys.
var kinds = []struct {
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

// Take reads the state of namespaces with c (a client whose scheme knows the infra types,
// such as the harness's management client).
func Take(ctx context.Context, c client.Reader, namespaces ...string) (State, error) {
	s := State{}
	for _, ns := range namespaces {
		for _, k := range kinds {
			list := k.list()
			if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
				return nil, fmt.Errorf("listing %ss in %s: %w", k.kind, ns, err)
			}
			err := meta.EachListItem(list, func(o runtime.Object) error {
				obj := o.(client.Object)
				s[Key(k.kind, obj)] = obj.GetResourceVersion()
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		var vmis kubevirtv1.VirtualMachineInstanceList
		if err := c.List(ctx, &vmis, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("listing VMIs in %s: %w", ns, err)
		}
		for i := range vmis.Items {
			s[Key("VMI", &vmis.Items[i])] = volumes(&vmis.Items[i])
		}
	}
	return s, nil
}

func volumes(vmi *kubevirtv1.VirtualMachineInstance) string {
	var vols []string
	for _, v := range vmi.Spec.Volumes {
		vols = append(vols, "spec:"+v.Name)
	}
	for _, st := range vmi.Status.VolumeStatus {
		vols = append(vols, st.Name+"="+string(st.Phase))
	}
	sort.Strings(vols)
	return strings.Join(vols, ",")
}

// Key names obj of kind as State does.
func Key(kind string, obj client.Object) string {
	return KeyOf(kind, obj.GetNamespace(), obj.GetName())
}

// KeyOf names the object namespace/name of kind as State does.
func KeyOf(kind, namespace, name string) string { return kind + " " + namespace + "/" + name }

// Diff lists, sorted, what was created, deleted or changed from s to after, leaving out the
// keys in allowed (what the caller legitimately created or changed). Empty means unchanged.
func (s State) Diff(after State, allowed ...string) []string {
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
