package autoscaler

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Field indexes on the caches. Every lookup the RPCs do is one of these, so a request costs
// map lookups, not scans, at a thousand Machines.
const (
	// indexProviderID indexes Machines and tenant Nodes by spec.providerID.
	indexProviderID = "spec.providerID"
	// indexMachineSet indexes Machines by the name of their controlling MachineSet.
	indexMachineSet = "tenantcloud.controller.machineset"
	// indexMachineDeployment indexes MachineSets by the name of their controlling
	// MachineDeployment.
	indexMachineDeployment = "tenantcloud.controller.machinedeployment"
	// indexMarked indexes the Machines that carry our deletion mark and are not being deleted
	// yet, so that Refresh finds the few it must look at without a scan (see sweepOrphans).
	indexMarked = "tenantcloud.scale-down-requested"
)

// fieldIndexer is the part of a controller-runtime cache that registers indexes.
type fieldIndexer interface {
	IndexField(ctx context.Context, obj client.Object, field string, extract client.IndexerFunc) error
}

// registerInfraIndexes must run before the infra cache starts its informers.
func registerInfraIndexes(ctx context.Context, idx fieldIndexer) error {
	for _, ix := range []struct {
		obj     client.Object
		field   string
		extract client.IndexerFunc
	}{
		{&clusterv1.Machine{}, indexProviderID, func(o client.Object) []string {
			if id := o.(*clusterv1.Machine).Spec.ProviderID; id != "" {
				return []string{id}
			}
			return nil
		}},
		{&clusterv1.Machine{}, indexMachineSet, controllerNameIndex("MachineSet")},
		{&clusterv1.Machine{}, indexMarked, func(o client.Object) []string {
			if m := o.(*clusterv1.Machine); MarkedByUs(m) && m.DeletionTimestamp.IsZero() {
				return []string{"true"}
			}
			return nil
		}},
		{&clusterv1.MachineSet{}, indexMachineDeployment, controllerNameIndex("MachineDeployment")},
	} {
		if err := idx.IndexField(ctx, ix.obj, ix.field, ix.extract); err != nil {
			return fmt.Errorf("indexing %T by %s: %w", ix.obj, ix.field, err)
		}
	}
	return nil
}

// registerNodeIndexes must run before the tenant cache starts.
func registerNodeIndexes(ctx context.Context, idx fieldIndexer) error {
	err := idx.IndexField(ctx, &corev1.Node{}, indexProviderID, func(o client.Object) []string {
		if id := o.(*corev1.Node).Spec.ProviderID; id != "" {
			return []string{id}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("indexing tenant Nodes by providerID: %w", err)
	}
	return nil
}

// controllerNameIndex indexes an object by its Cluster API controller of the given kind.
func controllerNameIndex(kind string) client.IndexerFunc {
	return func(o client.Object) []string {
		if ref := clusterController(o, kind); ref != nil {
			return []string{ref.Name}
		}
		return nil
	}
}

// clusterController returns o's controller reference if it is a Cluster API object of kind.
// Matching the API group, not just the kind, keeps a look-alike CRD from adopting Machines.
func clusterController(o metav1.Object, kind string) *metav1.OwnerReference {
	ref := metav1.GetControllerOfNoCopy(o)
	if ref == nil || ref.Kind != kind {
		return nil
	}
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != clusterv1.GroupVersion.Group {
		return nil
	}
	return ref
}

// controlledBy reports whether obj's Cluster API controller of kind is owner itself (same name
// and UID), not merely an object of that name.
func controlledBy(obj metav1.Object, kind string, owner metav1.Object) bool {
	ref := clusterController(obj, kind)
	return ref != nil && ref.Name == owner.GetName() && ref.UID == owner.GetUID()
}
