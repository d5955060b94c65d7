package storage

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestSharedBlockVolume is story 5: a ReadWriteMany Block claim used by pods on both nodes at
// once. The writer on node A puts bytes at the start of the device; the reader on node B, while
// the writer still runs, reads them: the attach-detach controller attached the one volume to
// both nodes, and csi-controller plugged the one disk into both VMs.
func TestSharedBlockVolume(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns := userNamespace(t, ctx, "story5")
	a, b := w.nodes[0], w.nodes[1]
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(storageClass),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			VolumeMode:       ptr.To(corev1.PersistentVolumeBlock),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("512Mi")}},
		},
	}
	create(t, ctx, pvc)
	text := "written-on-" + a.Name
	writer := userPod(t, ctx, pvc, "writer", a.Name, "block", "/dev/xvda", text)
	if line, want := podReport(t, ctx, a, writer), fmt.Sprintf("ok block /dev/xvda 536870912 %s", text); line != want {
		t.Fatalf("writer on %s reports %q, want %q", a.Name, line, want)
	}
	start := time.Now()
	reader := userPod(t, ctx, pvc, "reader", b.Name, "readblock", "/dev/xvda", strconv.Itoa(len(text)))
	t.Logf("second pod Running on %s with the volume the first uses on %s: %s", b.Name, a.Name, time.Since(start).Round(time.Millisecond))
	if line, want := podReport(t, ctx, b, reader), "ok readblock /dev/xvda 536870912 "+text; line != want {
		t.Errorf("reader on %s reports %q, want %q", b.Name, line, want)
	}
	if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(writer), writer); err != nil || writer.Status.Phase != corev1.PodRunning {
		t.Errorf("writer on %s is %s (%v), want still Running", a.Name, writer.Status.Phase, err)
	}
	pv := pvc.Spec.VolumeName
	for _, n := range []string{a.Name, b.Name} {
		if serial := attachedSerial(t, ctx, pv, n); !w.plugged(n, serial) {
			t.Errorf("PV %s on %s: attached serial %q; disks of the VM: %v", pv, n, serial, w.sim.Disks.Disks(infraNS, n))
		}
	}
}
