package storage

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestVolumeFollowsPod is story 2 and story 6: a pod writes to its volume on one node, is
// deleted and recreated on the other node, and finds the file there — the disk was unplugged
// from the first VM and plugged into the second by the real attacher. Then the user deletes pod
// and claim: the VolumeAttachment goes, the disk leaves the VM, the PV and the DataVolume are
// deleted, and nothing of the claim is left in either cluster.
func TestVolumeFollowsPod(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns := userNamespace(t, ctx, "story2")
	a, b := w.nodes[0], w.nodes[1]
	pvc := userClaim(t, ctx, ns, "follow", storageClass, false)
	first := userPod(t, ctx, pvc, "writer", a.Name, "fs", "/data", "written-on-"+a.Name)
	if line := podReport(t, ctx, a, first); !strings.HasPrefix(line, "ok fs ") {
		t.Fatalf("writer on %s: %q", a.Name, line)
	}
	pv := pvc.Spec.VolumeName
	serial := attachedSerial(t, ctx, pv, a.Name)
	if !w.plugged(a.Name, serial) {
		t.Fatalf("disk %q not plugged into %s", serial, a.Name)
	}

	start := time.Now()
	deleteAndWait(t, first)
	second := userPod(t, ctx, pvc, "reader", b.Name, "read", "/data", "-")
	t.Logf("pod moved %s → %s with its volume in %s", a.Name, b.Name, time.Since(start).Round(time.Millisecond))
	want := "ok read /data/volprobe.txt ext4 written-on-" + a.Name
	if line := podReport(t, ctx, b, second); line != want {
		t.Errorf("reader on %s reports %q, want %q", b.Name, line, want)
	}
	if w.plugged(a.Name, serial) || !w.plugged(b.Name, serial) {
		t.Errorf("disk %q: in %s %v, in %s %v; want it moved", serial, a.Name, w.plugged(a.Name, serial), b.Name, w.plugged(b.Name, serial))
	}

	// Story 6: the user deletes everything.
	deleteAndWait(t, second)
	deleteAndWait(t, pvc)
	tc := env.Tenant.Client
	harness.Eventually(t, ctx, volumeWait, "PV "+pv+" deleted and the disk unplugged", func(ctx context.Context) (bool, error) {
		pvErr := tc.Get(ctx, client.ObjectKey{Name: pv}, &corev1.PersistentVolume{})
		return apierrors.IsNotFound(pvErr) && attachedSerial(t, ctx, pv, b.Name) == "" && !w.plugged(b.Name, serial), client.IgnoreNotFound(pvErr)
	})
	dvs := &cdiv1.DataVolumeList{}
	if err := env.Management.Client.List(ctx, dvs, client.InNamespace(infraNS)); err != nil {
		t.Fatal(err)
	}
	for _, dv := range dvs.Items {
		if dv.Annotations[controller.AnnTenantClaim] == ns+"/"+pvc.Name && dv.DeletionTimestamp == nil {
			t.Errorf("DataVolume %s/%s of the deleted claim is still there", infraNS, dv.Name)
		}
	}
}
