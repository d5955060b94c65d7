package storage

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestRefusedClaims is story 7: requests a user can make that the tenant's grant refuses — a
// StorageClass naming an infra class not granted, a claim beyond the capacity quota
// (storage.maxTotalCapacity, 1Ti here), ReadWriteMany on a file system — stay Pending, and the
// claim's Events say why: the real csi-provisioner's ProvisioningFailed Event carrying
// csi-controller's gRPC code and message. Nothing is created in the management cluster. The
// classes bind Immediately, so no pod is needed for the provisioner to try (the chart's
// WaitForFirstConsumer class reaches the same CreateVolume once a pod is scheduled).
func TestRefusedClaims(t *testing.T) {
	requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	granted := immediateClass("tenantcloud-now", fixture.StorageClass)
	ungranted := immediateClass("tenantcloud-ungranted", "linstor-not-granted")
	create(t, ctx, granted)
	create(t, ctx, ungranted)
	ns := userNamespace(t, ctx, "story7")
	cases := []struct {
		name, class, size string
		mode              corev1.PersistentVolumeAccessMode
		want              []string // in the Event's message
	}{
		{"ungranted-class", ungranted.Name, "512Mi", corev1.ReadWriteOnce,
			[]string{"code = InvalidArgument", `infra StorageClass "linstor-not-granted" is not allowed for this tenant`}},
		{"beyond-quota", granted.Name, "2Ti", corev1.ReadWriteOnce,
			[]string{"code = ResourceExhausted", "capacity quota exceeded", "(storage.maxTotalCapacity)"}},
		{"rwx-filesystem", granted.Name, "512Mi", corev1.ReadWriteMany,
			[]string{"code = InvalidArgument", "MULTI_NODE_MULTI_WRITER with access type mount is not supported", "use access type block"}},
	}
	start := time.Now()
	claims := make([]*corev1.PersistentVolumeClaim, len(cases))
	// All claims first, so the provisioner works on them at once.
	for i, c := range cases {
		claims[i] = &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: c.name},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr.To(c.class),
				AccessModes:      []corev1.PersistentVolumeAccessMode{c.mode},
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(c.size)}},
			},
		}
		create(t, ctx, claims[i])
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pvc := claims[i]
			var msg string
			harness.Eventually(t, ctx, volumeWait, "a ProvisioningFailed Event on claim "+pvc.Name, func(ctx context.Context) (bool, error) {
				events := &corev1.EventList{}
				if err := env.Tenant.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
					return false, err
				}
				for _, e := range events.Items {
					if e.InvolvedObject.UID == pvc.UID && e.Type == corev1.EventTypeWarning && e.Reason == "ProvisioningFailed" {
						msg = e.Message
						return true, nil
					}
				}
				return false, nil
			})
			t.Logf("the user sees, %s after creating the claims: ProvisioningFailed: %s", time.Since(start).Round(time.Millisecond), msg)
			for _, want := range c.want {
				if !strings.Contains(msg, want) {
					t.Errorf("ProvisioningFailed says %q, want it to contain %q", msg, want)
				}
			}
			if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil {
				t.Fatal(err)
			}
			if pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.VolumeName != "" {
				t.Errorf("claim is %s with volume %q, want Pending without one", pvc.Status.Phase, pvc.Spec.VolumeName)
			}
		})
	}
	// The Events come after csi-controller refused the CreateVolume calls, so whatever they
	// would have created would exist by now.
	dvs := &cdiv1.DataVolumeList{}
	if err := env.Management.Client.List(ctx, dvs, client.InNamespace(infraNS)); err != nil {
		t.Fatal(err)
	}
	for _, dv := range dvs.Items {
		if strings.HasPrefix(dv.Annotations[controller.AnnTenantClaim], ns+"/") {
			t.Errorf("DataVolume %s/%s was created for refused claim %s", infraNS, dv.Name, dv.Annotations[controller.AnnTenantClaim])
		}
	}
}

// immediateClass is a StorageClass a user writes for volumes of the infra class infraClass,
// provisioned as soon as the claim is created.
func immediateClass(name, infraClass string) *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name},
		Provisioner:       tccsi.DriverName,
		Parameters:        map[string]string{"infraStorageClassName": infraClass},
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
}
