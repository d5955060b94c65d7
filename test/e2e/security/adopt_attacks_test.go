package security_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/adopt"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/infrastate"
	"github.com/tenantcloud/tenantcloud/test/upstream"
)

// Adoption (pkg/adopt) is run by the operator for alpha; alpha's admin prepares tenant objects
// to make it claim what is not alpha's. The upstream CSI labels are the ones upstream's own
// docs use for every tenant (csi-driver/cluster=tenant), the worst case: they cannot tell
// alpha's DataVolumes from beta's in the shared namespace, so only the tenant-side proof does.
var sharedCSILabels = map[string]string{"csi-driver/cluster": "tenant"}

// runAdoption applies adoption for alpha and asserts that it marked nothing; the reasons it
// gave for the named infra objects are returned for the table.
func (w *world) runAdoption(t *testing.T, names ...string) string {
	t.Helper()
	var out bytes.Buffer
	sum, err := adopt.Run(w.ctx, w.mgmt, w.tenant, adopt.Options{
		Scope:        w.scope,
		LoadBalancer: config.LoadBalancer{AllowedPools: []string{"public", "internal"}, DefaultPool: "public"},
		CSILabels:    sharedCSILabels,
	}, adopt.ApplyMode, &out)
	if err != nil {
		t.Fatalf("adoption: %v\n%s", err, out.String())
	}
	if sum.Marked != 0 {
		t.Errorf("adoption marked %d objects:\n%s", sum.Marked, out.String())
	}
	var res []string
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		for _, n := range names {
			if len(f) >= 3 && f[2] == n {
				if f[0] != string(adopt.Refuse) {
					t.Errorf("%s: %s, want refused:\n%s", n, f[0], out.String())
				}
				res = append(res, strings.Join(strings.Fields(line[strings.Index(line, n)+len(n):]), " "))
			}
		}
	}
	if len(res) != len(names) {
		t.Errorf("adoption listed %d of %v:\n%s", len(res), names, out.String())
	}
	return "adopt refuses: " + strings.Join(res, "; ")
}

// upstreamDataVolume makes a DataVolume as the upstream CSI controller of another cluster
// sharing the namespace (and the default labels) would, and returns it populated.
func (w *world) upstreamDataVolume(t *testing.T, labels map[string]string, annotations map[string]string) *cdiv1.DataVolume {
	t.Helper()
	dv := upstream.DataVolume(infraNS, uuid.NewUUID(), labels, 16*mib, "")
	name := w.dataVolume(t, infraNS, dv.Name, labels, annotations)
	w.must(t, w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: name}, dv))
	return dv
}

// craftedPV is a tenant PV of the upstream driver naming handle, with serial.
func (w *world) craftedPV(t *testing.T, name, handle, serial string) {
	t.Helper()
	pv := upstream.PV(&cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: handle, UID: types.UID(serial)}}, "default", name, uuid.NewUUID(), 16*mib, "xfs")
	pv.Name = name
	w.create(t, w.tenant, pv)
	t.Cleanup(func() { _ = w.tenant.Delete(context.Background(), pv) })
}

func adoptionAttacks() []attack {
	return []attack{
		{"11a", "PV naming beta's upstream DataVolume (shared labels), guessed serial", "adoption refuses; handle NotFound", func(t *testing.T, w *world) outcome {
			dv := w.upstreamDataVolume(t, sharedCSILabels, nil)
			w.craftedPV(t, "evil-adopt-serial", dv.Name, string(uuid.NewUUID()))
			res := w.runAdoption(t, dv.Name)
			res += "; legacy handle: " + publishEverything(t, w, dv.Name).result
			return refused(res, infrastate.KeyOf("DataVolume", infraNS, dv.Name), infrastate.KeyOf("PVC", infraNS, dv.Name))
		}},
		{"11b", "two PVs naming one upstream DataVolume, both with its UID", "adoption refuses (ambiguous)", func(t *testing.T, w *world) outcome {
			dv := w.upstreamDataVolume(t, sharedCSILabels, nil)
			// Even knowing the UID (say, it leaked), a second claimant makes it unprovable.
			w.craftedPV(t, "evil-adopt-twin-1", dv.Name, string(dv.UID))
			w.craftedPV(t, "evil-adopt-twin-2", dv.Name, string(dv.UID))
			return refused(w.runAdoption(t, dv.Name), infrastate.KeyOf("DataVolume", infraNS, dv.Name), infrastate.KeyOf("PVC", infraNS, dv.Name))
		}},
		{"11c", "PV naming a DataVolume adopted for beta", "handle NotFound on publish/validate/get/clone", func(t *testing.T, w *world) outcome {
			beta := infra.Scope{Namespace: infraNS, ClusterName: betaCluster}
			labels := beta.OwnedLabels(controller.Component)
			ann := beta.OwnedAnnotations()
			ann[infra.AnnotationAdoptedFrom] = infra.AdoptedFromCSI
			dv := w.upstreamDataVolume(t, labels, ann)
			// Adoption binds the marks to the UID; complete them as adopt would have for beta.
			patch := client.MergeFrom(dv.DeepCopy())
			dv.Annotations[infra.AnnotationAdoptedUID] = string(dv.UID)
			w.must(t, w.mgmt.Patch(w.ctx, dv, patch))
			w.craftedPV(t, "evil-adopt-beta", dv.Name, string(dv.UID))
			return refused(publishEverything(t, w, dv.Name).result, infrastate.KeyOf("DataVolume", infraNS, dv.Name), infrastate.KeyOf("PVC", infraNS, dv.Name))
		}},
		{"11d", "Service named as beta's upstream load balancer's tenant Service", "adoption refuses (labelled for beta)", func(t *testing.T, w *world) outcome {
			victim := w.upstreamLoadBalancer(t, betaCluster)
			w.hostileService(t, victim)
			return refused(w.runAdoption(t, victim.Name), infrastate.KeyOf("Service", infraNS, victim.Name))
		}},
		{"11e", "Service claiming an upstream load balancer whose UID it does not have", "adoption refuses (no tenant Service with that UID)", func(t *testing.T, w *world) outcome {
			victim := w.upstreamLoadBalancer(t, cluster)
			w.hostileService(t, victim)
			return refused(w.runAdoption(t, victim.Name), infrastate.KeyOf("Service", infraNS, victim.Name))
		}},
	}
}

// upstreamLoadBalancer makes the infra Service the upstream CCM of clusterName made for a
// tenant Service shop/web that alpha cannot see (its UID is not one of alpha's Services').
func (w *world) upstreamLoadBalancer(t *testing.T, clusterName string) *corev1.Service {
	t.Helper()
	tsvc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-" + clusterName, UID: uuid.NewUUID()},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}}},
	}
	infraSvc := upstream.InfraService(tsvc, infraNS, clusterName, nil)
	infraSvc.Spec.Ports[0].TargetPort.IntVal = 30080
	w.create(t, w.mgmt, infraSvc)
	t.Cleanup(func() { _ = w.mgmt.Delete(context.Background(), infraSvc) })
	return infraSvc
}

// hostileService is alpha's tenant Service with the namespace and name the victim's upstream
// labels record. Its class keeps alpha's ccm from making a load balancer of it; adoption
// refuses on the infra side before it looks at the class.
func (w *world) hostileService(t *testing.T, victim *corev1.Service) {
	t.Helper()
	ns := victim.Labels[upstream.LabelSvcNS]
	w.create(t, w.tenant, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: victim.Labels[upstream.LabelSvcName]},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To("example.com/none"),
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
	w.create(t, w.tenant, svc)
	t.Cleanup(func() { _ = w.tenant.Delete(context.Background(), svc) })
}
