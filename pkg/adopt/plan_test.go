package adopt

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/upstream"
)

const (
	infraNS    = "tenant-a"
	cluster    = "alpha"
	tenantUID  = types.UID("0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b")
	pvcUID     = types.UID("11111111-2222-4333-8444-555555555555")
	dvUID      = types.UID("7d3c1c3e-55b1-4f4e-8a57-1b2d3c4e5f60")
	address    = "192.0.2.5"
	poolPublic = "public"
)

var (
	scope     = infra.Scope{Namespace: infraNS, ClusterName: cluster}
	csiLabels = map[string]string{"csi-driver/cluster": cluster}
	options   = Options{Scope: scope, CSILabels: csiLabels,
		LoadBalancer: config.LoadBalancer{AllowedPools: []string{poolPublic, "internal"}, DefaultPool: poolPublic}}
)

// world is one tenant as the upstream components left it: a LoadBalancer Service with its
// infra Service (address from pool public), and a PVC's volume with its PV.
func world() Inventory {
	t := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: tenantUID},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}}},
	}
	is := upstream.InfraService(&t, infraNS, cluster, nil)
	is.UID, is.ResourceVersion = "infra-svc-uid", "10"
	is.Annotations[annotationAllocatedFrom] = poolPublic
	is.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: address}}
	dv := upstream.DataVolume(infraNS, pvcUID, csiLabels, 1<<30, "replicated")
	dv.UID, dv.ResourceVersion = dvUID, "20"
	pv := upstream.PV(dv, "shop", "data", pvcUID, 1<<30, "xfs")
	// CDI's claim: the DataVolume's name and labels, controlled by it.
	claim := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: dv.Name, UID: "claim-uid", ResourceVersion: "21",
		Labels:          map[string]string{"csi-driver/cluster": cluster, "app": "containerized-data-importer"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "cdi.kubevirt.io/v1beta1", Kind: "DataVolume", Name: dv.Name, UID: dv.UID, Controller: ptr.To(true)}}}}
	return Inventory{
		InfraServices:  []corev1.Service{*is},
		DataVolumes:    []cdiv1.DataVolume{*dv},
		Claims:         []corev1.PersistentVolumeClaim{claim},
		TenantServices: []corev1.Service{t},
		TenantPVs:      []corev1.PersistentVolume{*pv},
	}
}

func TestPlan(t *testing.T) {
	lbName := loadbalancer.UpstreamServiceName(tenantUID)
	dvName := upstream.VolumeName(pvcUID)
	for _, tc := range []struct {
		name string
		mut  func(*Inventory, *Options)
		// want is "<kind>/<name>=<verdict>[:<reason substring>]" per listed item, in order.
		want []string
	}{
		{"both proven", nil, []string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=claim"}},
		{"no CSI labels given: volumes not considered", func(_ *Inventory, o *Options) { o.CSILabels = nil },
			[]string{"Service/" + lbName + "=claim"}},
		{"not upstream-shaped objects are not listed", func(inv *Inventory, _ *Options) {
			delete(inv.InfraServices[0].Labels, upstream.LabelSvcName)
			inv.DataVolumes[0].Labels = map[string]string{infra.LabelClusterName: cluster}
		}, nil},

		// Load balancers.
		{"infra Service of another cluster", func(inv *Inventory, _ *Options) { inv.InfraServices[0].Labels[upstream.LabelCluster] = "beta" },
			[]string{"Service/" + lbName + "=refuse:labelled for cluster \"beta\"", "DataVolume/" + dvName + "=claim"}},
		{"tenant Service gone", func(inv *Inventory, _ *Options) { inv.TenantServices = nil },
			[]string{"Service/" + lbName + "=refuse:no live tenant Service", "DataVolume/" + dvName + "=claim"}},
		{"tenant Service re-created (new UID)", func(inv *Inventory, _ *Options) { inv.TenantServices[0].UID = "99999999-2222-4333-8444-555555555555" },
			[]string{"Service/" + lbName + "=refuse:no live tenant Service", "DataVolume/" + dvName + "=claim"}},
		{"labels name another tenant Service than the UID's", func(inv *Inventory, _ *Options) { inv.InfraServices[0].Labels[upstream.LabelSvcName] = "db" },
			[]string{"Service/" + lbName + "=refuse:labelled for tenant Service shop/db", "DataVolume/" + dvName + "=claim"}},
		{"tenant Service no longer a LoadBalancer", func(inv *Inventory, _ *Options) { inv.TenantServices[0].Spec.Type = corev1.ServiceTypeClusterIP },
			[]string{"Service/" + lbName + "=refuse:class-less LoadBalancer", "DataVolume/" + dvName + "=claim"}},
		{"tenant Service of another class", func(inv *Inventory, _ *Options) { inv.TenantServices[0].Spec.LoadBalancerClass = ptr.To("other") },
			[]string{"Service/" + lbName + "=refuse:class-less LoadBalancer", "DataVolume/" + dvName + "=claim"}},
		{"address from a pool the ccm will not ask for", func(inv *Inventory, _ *Options) {
			inv.InfraServices[0].Annotations[annotationAllocatedFrom] = "internal"
		},
			[]string{"Service/" + lbName + "=refuse:came from pool \"internal\"", "DataVolume/" + dvName + "=claim"}},
		{"tenant Service names that pool: kept", func(inv *Inventory, _ *Options) {
			inv.InfraServices[0].Annotations[annotationAllocatedFrom] = "internal"
			inv.TenantServices[0].Annotations = map[string]string{"metallb.universe.tf/address-pool": "internal"}
		}, []string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=claim"}},
		{"pool of the address unknown", func(inv *Inventory, _ *Options) { delete(inv.InfraServices[0].Annotations, annotationAllocatedFrom) },
			[]string{"Service/" + lbName + "=refuse:did not record", "DataVolume/" + dvName + "=claim"}},
		{"no address yet: nothing to keep", func(inv *Inventory, _ *Options) {
			delete(inv.InfraServices[0].Annotations, annotationAllocatedFrom)
			inv.InfraServices[0].Status = corev1.ServiceStatus{}
		}, []string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=claim"}},
		{"requested address other than the current one", func(inv *Inventory, _ *Options) { inv.TenantServices[0].Spec.LoadBalancerIP = "192.0.2.6" },
			[]string{"Service/" + lbName + "=refuse:does not include the current 192.0.2.5", "DataVolume/" + dvName + "=claim"}},
		{"pool not granted to the tenant", func(inv *Inventory, _ *Options) {
			inv.TenantServices[0].Annotations = map[string]string{"metallb.io/address-pool": "foreign"}
		}, []string{"Service/" + lbName + "=refuse:the ccm would refuse", "DataVolume/" + dvName + "=claim"}},
		{"tenantcloud already made a second load balancer", func(inv *Inventory, _ *Options) {
			native, _ := loadbalancer.InfraServiceName(tenantUID)
			inv.InfraServices = append(inv.InfraServices, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: native}})
		}, []string{"Service/" + lbName + "=refuse:already created", "DataVolume/" + dvName + "=claim"}},
		{"upstream-labelled Service marked by tenantcloud for beta", func(inv *Inventory, _ *Options) {
			inv.InfraServices[0].Labels[infra.LabelManagedBy] = infra.ManagedByValue
		}, []string{"Service/" + lbName + "=refuse:already carries", "DataVolume/" + dvName + "=claim"}},
		{"infra Service not a LoadBalancer", func(inv *Inventory, _ *Options) { inv.InfraServices[0].Spec.Type = corev1.ServiceTypeClusterIP },
			[]string{"Service/" + lbName + "=refuse:not LoadBalancer", "DataVolume/" + dvName + "=claim"}},

		// Volumes.
		{"PV serial is not the DataVolume's UID", func(inv *Inventory, _ *Options) {
			inv.TenantPVs[0].Spec.CSI.VolumeAttributes["serial"] = "00000000-0000-4000-8000-000000000000"
		}, []string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:not this DataVolume's UID"}},
		{"PV without serial", func(inv *Inventory, _ *Options) { delete(inv.TenantPVs[0].Spec.CSI.VolumeAttributes, "serial") },
			[]string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:not this DataVolume's UID"}},
		{"no PV names the DataVolume", func(inv *Inventory, _ *Options) { inv.TenantPVs = nil },
			[]string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:no tenant PV"}},
		{"PV of another driver", func(inv *Inventory, _ *Options) { inv.TenantPVs[0].Spec.CSI.Driver = "csi.tenantcloud.io" },
			[]string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:no tenant PV"}},
		{"two PVs claim the handle", func(inv *Inventory, _ *Options) {
			twin := inv.TenantPVs[0].DeepCopy()
			twin.Name = "twin"
			inv.TenantPVs = append(inv.TenantPVs, *twin)
		}, []string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:2 tenant PVs"}},
		{"DataVolume of another cluster sharing the labels", func(inv *Inventory, _ *Options) {
			inv.DataVolumes[0].Labels = map[string]string{"csi-driver/cluster": cluster, infra.LabelClusterName: "beta"}
		}, []string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:labelled for cluster \"beta\""}},
		{"DataVolume without the upstream labels", func(inv *Inventory, _ *Options) {
			inv.DataVolumes[0].Labels = map[string]string{"csi-driver/cluster": "beta"}
		}, []string{"Service/" + lbName + "=claim"}},
		{"virtio bus", func(inv *Inventory, _ *Options) { inv.TenantPVs[0].Spec.CSI.VolumeAttributes["bus"] = "virtio" },
			[]string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:scsi only"}},
		{"DataVolume not populated: no claim", func(inv *Inventory, _ *Options) { inv.Claims = nil },
			[]string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:does not exist"}},
		{"claim of the same name controlled by another DataVolume", func(inv *Inventory, _ *Options) {
			inv.Claims[0].OwnerReferences[0].UID = "other-dv"
		}, []string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:not controlled by this DataVolume"}},
		{"claim labelled for beta", func(inv *Inventory, _ *Options) { inv.Claims[0].Labels[infra.LabelClusterName] = "beta" },
			[]string{"Service/" + lbName + "=claim", "DataVolume/" + dvName + "=refuse:claim " + dvName + " is labelled for cluster \"beta\""}},
		{"not a pvc-<uid> name", func(inv *Inventory, _ *Options) {
			inv.DataVolumes[0].Name = "rootdisk"
			inv.TenantPVs[0].Spec.CSI.VolumeHandle = "rootdisk"
		}, []string{"Service/" + lbName + "=claim", "DataVolume/rootdisk=refuse:not an upstream handle"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, o := world(), options
			if tc.mut != nil {
				tc.mut(&inv, &o)
			}
			got := Plan(o, inv)
			if len(got) != len(tc.want) {
				t.Fatalf("Plan listed %d items, want %d:\n%s", len(got), len(tc.want), describe(got))
			}
			for i, w := range tc.want {
				head, reason, _ := strings.Cut(w, ":")
				it := got[i]
				if h := it.Kind + "/" + it.Name + "=" + string(it.Verdict); h != head || !strings.Contains(it.Reason, reason) {
					t.Errorf("item %d = %s (%s), want %s with reason containing %q", i, h, it.Reason, head, reason)
				}
			}
		})
	}
}

// TestPlanMarks: a claim adds exactly the marks the ownership checks accept, bound to the
// object's UID, and records which labels it added.
func TestPlanMarks(t *testing.T) {
	items := Plan(options, world())
	if len(items) != 2 {
		t.Fatalf("want 2 items:\n%s", describe(items))
	}
	svc, dv := items[0], items[1]
	for _, c := range []struct {
		what, got, want string
	}{
		{"svc managed-by", svc.labels[infra.LabelManagedBy], infra.ManagedByValue},
		{"svc component", svc.labels[infra.LabelComponent], loadbalancer.Component},
		{"svc tenant uid", svc.labels[loadbalancer.LabelServiceUID], string(tenantUID)},
		{"svc adopted-from", svc.annotations[infra.AnnotationAdoptedFrom], infra.AdoptedFromCCM},
		{"svc adopted-uid", svc.annotations[infra.AnnotationAdoptedUID], "infra-svc-uid"},
		{"svc cluster annotation", svc.annotations[infra.AnnotationCluster], cluster},
		{"svc added labels", svc.annotations[AnnotationAddedLabels], strings.Join([]string{infra.LabelManagedBy, infra.LabelComponent,
			loadbalancer.LabelServiceName, loadbalancer.LabelServiceNamespace, loadbalancer.LabelServiceUID}, ",")},
		{"dv component", dv.labels[infra.LabelComponent], controller.Component},
		{"dv cluster label", dv.labels[infra.LabelClusterName], cluster},
		{"dv adopted-uid", dv.annotations[infra.AnnotationAdoptedUID], string(dvUID)},
		{"dv bus", dv.annotations[controller.AnnBus], "scsi"},
		{"dv tenant claim", dv.annotations[controller.AnnTenantClaim], "shop/data"},
		{"dv added labels", dv.annotations[AnnotationAddedLabels], strings.Join([]string{infra.LabelManagedBy, infra.LabelClusterName, infra.LabelComponent}, ",")},
		{"claim marked first", dv.first.Kind + "/" + dv.first.Name, KindClaim + "/" + dv.Name},
		{"claim cluster label", dv.first.labels[infra.LabelClusterName], cluster},
		{"claim has no ownership labels", dv.first.labels[infra.LabelManagedBy], ""},
		{"claim adopted-uid", dv.first.annotations[infra.AnnotationAdoptedUID], "claim-uid"},
		{"claim added labels", dv.first.annotations[AnnotationAddedLabels], infra.LabelClusterName},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
}

func describe(items []Item) string {
	var b strings.Builder
	for _, it := range items {
		b.WriteString("  " + it.Kind + "/" + it.Name + " " + string(it.Verdict) + ": " + it.Reason + "\n")
	}
	return b.String()
}
