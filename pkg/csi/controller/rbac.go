package controller

import rbacv1 "k8s.io/api/rbac/v1"

// InfraRBACRules is everything csi-controller needs in the tenant's infra namespace, as a
// namespaced Role (DESIGN.md §2.6): nothing cluster-scoped, no Secrets, and no write access to
// VMs or VMIs themselves (virt-api writes them for the addvolume/removevolume subresources).
// test/e2e/csicontroller runs the real binary bound to exactly these rules. /readyz (Probe) is
// readable by every authenticated user through the default system:public-info-viewer role.
// Typed objects are read from the informer cache only (list/watch, never a live get; the
// Cluster is the exception, see infra.ClusterOwnerReference);
// test/e2e/deploy removes each verb in turn and names the scenario that then fails.
func InfraRBACRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		// Volumes: created, listed/watched (scoped cache), deleted; capacity annotation patched
		// on expansion.
		{APIGroups: []string{"cdi.kubevirt.io"}, Resources: []string{"datavolumes"},
			Verbs: []string{"list", "watch", "create", "delete", "patch"}},
		// CDI's claims: watched for resize progress and health, patched to expand.
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"},
			Verbs: []string{"list", "watch", "patch"}},
		// The tenant's VMs: node IDs resolve to them, attachments are read from them.
		{APIGroups: []string{"kubevirt.io"}, Resources: []string{"virtualmachines", "virtualmachineinstances"},
			Verbs: []string{"list", "watch"}},
		// Hot-plug through virt-api (PUT = update on the subresource).
		{APIGroups: []string{"subresources.kubevirt.io"},
			Resources: []string{"virtualmachines/addvolume", "virtualmachines/removevolume",
				"virtualmachineinstances/addvolume", "virtualmachineinstances/removevolume"},
			Verbs: []string{"update"}},
		// Snapshots (only used when a VolumeSnapshotClass is granted).
		{APIGroups: []string{"snapshot.storage.k8s.io"}, Resources: []string{"volumesnapshots"},
			Verbs: []string{"get", "list", "watch", "create", "delete"}},
		// The tenant's Cluster, read live for the owner reference DataVolumes and
		// VolumeSnapshots carry so the garbage collector removes them with it.
		{APIGroups: []string{"cluster.x-k8s.io"}, Resources: []string{"clusters"},
			Verbs: []string{"get"}},
		// Events on DataVolumes (Published, Unpublished, Expanded, PublishTimeout).
		{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"},
			Verbs: []string{"create", "patch"}},
	}
}
