// Package adopt takes over, in place, the infra objects kubevirt/cloud-provider-kubevirt and
// kubevirt/csi-driver created for one tenant (infra namespace + cluster name), so that a
// tenant switches to tenantcloud without new load balancer addresses and without copying
// volumes (docs/migration.md).
//
// Adoption only adds marks: the ownership labels and annotations tenantcloud's checks accept
// (infra.Scope.Owns) and the adoption annotations that tie them to the object's own UID
// (infra.Scope.Adopted). It claims an object only when both sides prove it is this tenant's:
//   - an infra Service is the upstream CCM's for this cluster (its cluster-name label and its
//     "a<uid>" name) AND a live tenant LoadBalancer Service has the UID that name derives from,
//     under the namespace and name the upstream labels record;
//   - a DataVolume carries the labels the upstream CSI controller was configured with AND a
//     tenant PV of driver csi.kubevirt.io names it as its handle with the DataVolume's own UID
//     as its serial (a value only the upstream controller could have written there: the
//     tenant never sees infra UIDs of objects that are not its own).
//
// Everything else that looks upstream-made is refused, with the reason. The plan is pure
// (Plan, table-tested); Collect and Apply are the API glue.
package adopt

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Labels the upstream CCM puts on the infra Services it creates (pkg/provider/loadbalancer.go
// EnsureLoadBalancer), besides cluster.x-k8s.io/cluster-name = its --cluster-name.
const (
	UpstreamLabelServiceName      = "cluster.x-k8s.io/tenant-service-name"
	UpstreamLabelServiceNamespace = "cluster.x-k8s.io/tenant-service-namespace"
)

// AnnotationAddedLabels lists, comma-separated, the label keys adoption added (the others were
// there before), so that a rollback removes exactly those.
const AnnotationAddedLabels = "tenantcloud.io/adopted-added-labels"

// annotationAllocatedFrom is the pool MetalLB records on a Service it gave an address.
const annotationAllocatedFrom = "metallb.io/ip-allocated-from-pool"

// Options say which tenant to adopt for and what the upstream components were configured with.
type Options struct {
	Scope infra.Scope
	// LoadBalancer is the tenant's grant (config loadBalancer): what the ccm will ask MetalLB
	// for decides whether an address survives the switch.
	LoadBalancer config.LoadBalancer
	// CSILabels are the upstream CSI controller's --infra-cluster-labels; every DataVolume it
	// created carries them. Empty: volumes are not considered.
	CSILabels map[string]string
}

// Inventory is what Plan reads: the infra namespace's Services and DataVolumes, the tenant's
// Services and PVs.
type Inventory struct {
	InfraServices []corev1.Service
	DataVolumes   []cdiv1.DataVolume
	// Claims are the infra namespace's PVCs: CDI's claims of the DataVolumes.
	Claims         []corev1.PersistentVolumeClaim
	TenantServices []corev1.Service
	TenantPVs      []corev1.PersistentVolume
}

// Verdict is what adoption does with one infra object.
type Verdict string

const (
	// Claim: proven this tenant's; Apply marks it.
	Claim Verdict = "claim"
	// Claimed: already adopted for this tenant (an earlier run); nothing to do.
	Claimed Verdict = "adopted"
	// Refuse: upstream-shaped, but its ownership is not proven; it is left alone.
	Refuse Verdict = "refuse"
)

// Kinds of infra objects.
const (
	KindService    = "Service"
	KindDataVolume = "DataVolume"
	KindClaim      = "PersistentVolumeClaim"
)

// Item is the decision about one infra object.
type Item struct {
	Kind, Name string
	Verdict    Verdict
	// Proof names the tenant object that proves (or fails to prove) ownership.
	Proof  string
	Reason string

	// For Claim: the object as listed (Apply patches exactly this version) and the marks.
	obj         objectMeta
	labels      map[string]string
	annotations map[string]string
	// first is marked before this item: a DataVolume's claim, which CDI created with the
	// DataVolume's labels of the time (so without this cluster's name, which tenantcloud's
	// scoped caches select by).
	first *Item
}

// objectMeta is the identity of the listed object Apply patches.
type objectMeta struct {
	uid             types.UID
	resourceVersion string
	labels          map[string]string
	// annotations tell a claim marked by a run that was cut short (claims are marked before
	// their DataVolume): the label keys that run added stay recorded for the rollback.
	annotations map[string]string
}

// Plan decides about every upstream-shaped infra object of inv, in a stable order (Services,
// then DataVolumes, each by name). Objects that are not upstream-shaped (tenantcloud's own,
// CAPK's, an operator's) are not listed.
func Plan(o Options, inv Inventory) []Item {
	var out []Item
	tenantByName := map[string]*corev1.Service{}
	for i := range inv.TenantServices {
		s := &inv.TenantServices[i]
		if s.UID != "" {
			tenantByName[loadbalancer.UpstreamServiceName(s.UID)] = s
		}
	}
	infraNames := map[string]bool{}
	for i := range inv.InfraServices {
		infraNames[inv.InfraServices[i].Name] = true
	}
	for i := range inv.InfraServices {
		if it, ok := planService(o, &inv.InfraServices[i], tenantByName, infraNames); ok {
			out = append(out, it)
		}
	}
	pvsByHandle := map[string][]*corev1.PersistentVolume{}
	for i := range inv.TenantPVs {
		pv := &inv.TenantPVs[i]
		if c := pv.Spec.CSI; c != nil && c.Driver == tccsi.LegacyDriverName {
			pvsByHandle[c.VolumeHandle] = append(pvsByHandle[c.VolumeHandle], pv)
		}
	}
	claims := map[string]*corev1.PersistentVolumeClaim{}
	for i := range inv.Claims {
		claims[inv.Claims[i].Name] = &inv.Claims[i]
	}
	for i := range inv.DataVolumes {
		if it, ok := planDataVolume(o, &inv.DataVolumes[i], pvsByHandle, claims); ok {
			out = append(out, it)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind == KindService
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func refuse(kind, name, proof, format string, args ...any) Item {
	return Item{Kind: kind, Name: name, Verdict: Refuse, Proof: proof, Reason: fmt.Sprintf(format, args...)}
}

// planService decides about one infra Service; false means it is not upstream-shaped.
func planService(o Options, svc *corev1.Service, tenantByName map[string]*corev1.Service, infraNames map[string]bool) (Item, bool) {
	s := o.Scope
	if s.Adopted(svc, infra.AdoptedFromCCM) {
		return Item{Kind: KindService, Name: svc.Name, Verdict: Claimed, Proof: tenantRef(svc.Labels[loadbalancer.LabelServiceNamespace], svc.Labels[loadbalancer.LabelServiceName]),
			Reason: "adopted by an earlier run"}, true
	}
	tns, tname := svc.Labels[UpstreamLabelServiceNamespace], svc.Labels[UpstreamLabelServiceName]
	if tns == "" || tname == "" {
		return Item{}, false // not made by the upstream CCM
	}
	proof := tenantRef(tns, tname)
	ref := func(format string, args ...any) (Item, bool) {
		return refuse(KindService, svc.Name, proof, format, args...), true
	}
	if c := svc.Labels[infra.LabelClusterName]; c != s.ClusterName {
		return ref("labelled for cluster %q, not %q", c, s.ClusterName)
	}
	if svc.Labels[infra.LabelManagedBy] != "" {
		return ref("already carries %s=%s; not an upstream object", infra.LabelManagedBy, svc.Labels[infra.LabelManagedBy])
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return ref("type %s, not LoadBalancer", svc.Spec.Type)
	}
	tenant, ok := tenantByName[svc.Name]
	if !ok {
		return ref("no live tenant Service has the UID this name derives from (%q = \"a\" + UID without dashes, cut to 32)", svc.Name)
	}
	if tenant.Namespace != tns || tenant.Name != tname {
		return ref("the tenant Service with that UID is %s, but the infra Service is labelled for %s", tenantRef(tenant.Namespace, tenant.Name), proof)
	}
	proof = fmt.Sprintf("%s uid %s", proof, tenant.UID)
	if tenant.Spec.Type != corev1.ServiceTypeLoadBalancer || tenant.Spec.LoadBalancerClass != nil {
		return refuse(KindService, svc.Name, proof, "the tenant Service no longer asks for a class-less LoadBalancer"), true
	}
	if native, err := loadbalancer.InfraServiceName(tenant.UID); err == nil && infraNames[native] {
		return refuse(KindService, svc.Name, proof, "tenantcloud already created %s for this Service (a second address); delete one of them first", native), true
	}
	desired, err := loadbalancer.DesiredService(tenant, loadbalancer.Policy{LB: o.LoadBalancer, Scope: s})
	if err != nil {
		return refuse(KindService, svc.Name, proof, "the ccm would refuse this Service: %v", err), true
	}
	if why := addressAtRisk(svc, desired.Annotations); why != "" {
		return refuse(KindService, svc.Name, proof, "%s", why), true
	}
	labels := s.OwnedLabels(loadbalancer.Component)
	labels[loadbalancer.LabelServiceNamespace] = tenant.Namespace
	labels[loadbalancer.LabelServiceName] = tenant.Name
	labels[loadbalancer.LabelServiceUID] = string(tenant.UID)
	return claim(KindService, svc.ObjectMeta.Name, proof, "upstream load balancer of this cluster; tenant Service with its UID is live",
		objectMeta{uid: svc.UID, resourceVersion: svc.ResourceVersion, labels: svc.Labels}, labels,
		map[string]string{infra.AnnotationAdoptedFrom: infra.AdoptedFromCCM}, s), true
}

// addressAtRisk says why the Service's current addresses might not survive what the ccm will
// ask MetalLB for ("" when they will): a pool other than the one they came from, or requested
// addresses that do not include them.
func addressAtRisk(svc *corev1.Service, want map[string]string) string {
	var current []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			current = append(current, in.IP)
		}
	}
	if len(current) == 0 {
		return "" // no address yet: nothing to keep
	}
	if pool := want[loadbalancer.AnnAddressPool]; pool != "" {
		from, ok := svc.Annotations[annotationAllocatedFrom]
		switch {
		case !ok:
			return fmt.Sprintf("the ccm will ask MetalLB for pool %q, and MetalLB did not record (%s) which pool %v came from", pool, annotationAllocatedFrom, current)
		case from != pool:
			return fmt.Sprintf("the ccm will ask MetalLB for pool %q, but %v came from pool %q: the address would change (grant that pool, or set it on the tenant Service)", pool, current, from)
		}
	}
	if ips := want[loadbalancer.AnnLoadBalancerIPs]; ips != "" {
		requested := map[netip.Addr]bool{}
		for _, ip := range strings.Split(ips, ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(ip)); err == nil {
				requested[a] = true
			}
		}
		for _, ip := range current {
			if a, err := netip.ParseAddr(ip); err != nil || !requested[a] {
				return fmt.Sprintf("the ccm will ask MetalLB for %s, which does not include the current %s", ips, ip)
			}
		}
	}
	return ""
}

// planDataVolume decides about one DataVolume; false means it is not upstream-shaped.
func planDataVolume(o Options, dv *cdiv1.DataVolume, pvsByHandle map[string][]*corev1.PersistentVolume, claims map[string]*corev1.PersistentVolumeClaim) (Item, bool) {
	s := o.Scope
	if s.Adopted(dv, infra.AdoptedFromCSI) {
		return Item{Kind: KindDataVolume, Name: dv.Name, Verdict: Claimed, Proof: "PV " + dv.Annotations[controller.AnnTenantClaim],
			Reason: "adopted by an earlier run"}, true
	}
	if len(o.CSILabels) == 0 || !hasLabels(dv.Labels, o.CSILabels) {
		return Item{}, false
	}
	pvs := pvsByHandle[dv.Name]
	proof := "no PV"
	if len(pvs) == 1 {
		proof = "PV " + pvs[0].Name
	}
	ref := func(format string, args ...any) (Item, bool) {
		return refuse(KindDataVolume, dv.Name, proof, format, args...), true
	}
	if !tccsi.IsLegacyVolumeID(dv.Name) {
		return ref("name is not an upstream handle (%s<uid>)", tccsi.LegacyVolumeIDPrefix)
	}
	if c, ok := dv.Labels[infra.LabelClusterName]; ok && c != s.ClusterName {
		return ref("labelled for cluster %q, not %q", c, s.ClusterName)
	}
	if dv.Labels[infra.LabelManagedBy] != "" {
		return ref("already carries %s=%s; not an upstream object", infra.LabelManagedBy, dv.Labels[infra.LabelManagedBy])
	}
	switch len(pvs) {
	case 0:
		return ref("no tenant PV of driver %s has this handle", tccsi.LegacyDriverName)
	case 1:
	default:
		names := make([]string, len(pvs))
		for i, pv := range pvs {
			names[i] = pv.Name
		}
		return ref("%d tenant PVs (%s) claim this handle", len(pvs), strings.Join(names, ", "))
	}
	pv := pvs[0]
	attrs := pv.Spec.CSI.VolumeAttributes
	if got := attrs[tccsi.LegacyContextSerial]; got != string(dv.UID) {
		return ref("the PV's serial %q is not this DataVolume's UID: the PV was not written by the upstream controller for it", got)
	}
	if bus := attrs[tccsi.LegacyContextBus]; bus != "" && bus != tccsi.BusSCSI {
		return ref("bus %q: adopted volumes are served on scsi only (a virtio guest sees 20 bytes of a 36-byte serial)", bus)
	}
	pvc, why := claimOf(dv, claims, s)
	if why != "" {
		return ref("%s", why)
	}
	annotations := map[string]string{
		infra.AnnotationAdoptedFrom: infra.AdoptedFromCSI,
		controller.AnnBus:           tccsi.BusSCSI,
	}
	if ref := pv.Spec.ClaimRef; ref != nil {
		annotations[controller.AnnTenantClaim] = ref.Namespace + "/" + ref.Name
	}
	it := claim(KindDataVolume, dv.Name, proof+" (serial = UID "+string(dv.UID)+")", "upstream volume with this cluster's labels; tenant PV names it with its UID as serial",
		objectMeta{uid: dv.UID, resourceVersion: dv.ResourceVersion, labels: dv.Labels},
		s.OwnedLabels(controller.Component), annotations, s)
	if it.Verdict == Claim {
		// The claim gets only the cluster's name (to be seen) and the adoption marks (to be
		// released); it is the DataVolume's by CDI's controller reference, which tenantcloud
		// checks (infra.Client.ClaimOf), not ours.
		first := claim(KindClaim, pvc.Name, "controlled by DataVolume "+dv.Name, "claim of the adopted DataVolume",
			objectMeta{uid: pvc.UID, resourceVersion: pvc.ResourceVersion, labels: pvc.Labels, annotations: pvc.Annotations},
			map[string]string{infra.LabelClusterName: s.ClusterName}, map[string]string{infra.AnnotationAdoptedFrom: infra.AdoptedFromCSI}, s)
		if first.Verdict != Claim {
			return ref("its claim %s: %s", pvc.Name, first.Reason)
		}
		it.first = &first
	}
	return it, true
}

// claimOf finds the claim CDI made for dv (dv.status.claimName, else its name) and checks that
// dv controls it; why says what is wrong otherwise.
func claimOf(dv *cdiv1.DataVolume, claims map[string]*corev1.PersistentVolumeClaim, s infra.Scope) (*corev1.PersistentVolumeClaim, string) {
	name := dv.Status.ClaimName
	if name == "" {
		name = dv.Name
	}
	pvc, ok := claims[name]
	if !ok {
		return nil, fmt.Sprintf("its claim %s does not exist (not populated yet?)", name)
	}
	owner := metav1.GetControllerOf(pvc)
	if owner == nil || owner.UID != dv.UID || owner.Kind != "DataVolume" {
		return nil, fmt.Sprintf("claim %s is not controlled by this DataVolume", name)
	}
	if c, ok := pvc.Labels[infra.LabelClusterName]; ok && c != s.ClusterName {
		return nil, fmt.Sprintf("claim %s is labelled for cluster %q", name, c)
	}
	return pvc, ""
}

// claim builds a Claim item: the ownership marks, the adoption marks bound to the object's
// UID, and the list of label keys that were not there before.
func claim(kind, name, proof, reason string, obj objectMeta, labels, annotations map[string]string, s infra.Scope) Item {
	ann := s.OwnedAnnotations()
	maps.Copy(ann, annotations)
	ann[infra.AnnotationAdoptedUID] = string(obj.uid)
	var added []string
	for k, v := range labels {
		if cur, ok := obj.labels[k]; !ok {
			added = append(added, k)
		} else if cur != v {
			// Only possible for keys Plan already checked (cluster name); kept for safety.
			return refuse(kind, name, proof, "label %s is %q, adoption would set %q", k, cur, v)
		}
	}
	if obj.annotations[infra.AnnotationAdoptedUID] == string(obj.uid) {
		for _, k := range strings.Split(obj.annotations[AnnotationAddedLabels], ",") {
			if k != "" && !slices.Contains(added, k) {
				added = append(added, k)
			}
		}
	}
	slices.Sort(added)
	ann[AnnotationAddedLabels] = strings.Join(added, ",")
	return Item{Kind: kind, Name: name, Verdict: Claim, Proof: proof, Reason: reason, obj: obj, labels: labels, annotations: ann}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func tenantRef(ns, name string) string { return "tenant Service " + ns + "/" + name }
