package storage

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestSnapshotAndClone is story 4: the user snapshots a claim a pod wrote to (the chart's
// VolumeSnapshotClass; the tenant's snapshot-controller and the real csi-snapshotter cut it
// through csi-controller), restores a new claim from the snapshot, and clones the claim; pods
// using the restored and the cloned claims read the bytes the first pod wrote. The simulated
// backend copies the disk's data on snapshot and clone (test/sim/disks), as a storage backend
// does, so the bytes arrive only if the whole chain named the right source.
func TestSnapshotAndClone(t *testing.T) {
	requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns := userNamespace(t, ctx, "story4")
	text := "snapshotted-data"
	origin := userClaim(t, ctx, ns, "origin", storageClass, false)
	writer := userPod(t, ctx, origin, "writer", "", "fs", "/data", text)
	if line := podReport(t, ctx, w.node(t, writer.Spec.NodeName), writer); line != "ok fs /data/volprobe.txt ext4 "+text {
		t.Fatalf("writer reports %q", line)
	}

	start := time.Now()
	vs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
		"metadata": map[string]any{"namespace": ns, "name": "origin-snap"},
		"spec": map[string]any{"volumeSnapshotClassName": "tenantcloud",
			"source": map[string]any{"persistentVolumeClaimName": origin.Name}},
	}}
	create(t, ctx, vs)
	var restoreSize string
	harness.Eventually(t, ctx, volumeWait, "VolumeSnapshot readyToUse", func(ctx context.Context) (bool, error) {
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(vs), vs); err != nil {
			return false, err
		}
		if msg, _, _ := unstructured.NestedString(vs.Object, "status", "error", "message"); msg != "" {
			t.Logf("VolumeSnapshot error (retried): %s", msg)
		}
		ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse")
		restoreSize, _, _ = unstructured.NestedString(vs.Object, "status", "restoreSize")
		return ready, nil
	})
	t.Logf("VolumeSnapshot created → readyToUse: %s (restoreSize %s)", time.Since(start).Round(time.Millisecond), restoreSize)

	for _, c := range []struct {
		name string
		src  corev1.TypedLocalObjectReference
	}{
		{"restored", corev1.TypedLocalObjectReference{APIGroup: ptr.To("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "origin-snap"}},
		{"clone", corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: origin.Name}},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			pvc := &corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: c.name},
				Spec: corev1.PersistentVolumeClaimSpec{
					StorageClassName: ptr.To(storageClass),
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("512Mi")}},
					DataSource:       &c.src,
				},
			}
			create(t, ctx, pvc)
			reader := userPod(t, ctx, pvc, "reader-"+c.name, "", "read", "/data", "-")
			t.Logf("%s claim + pod created → pod Running: %s", c.name, time.Since(start).Round(time.Millisecond))
			if line, want := podReport(t, ctx, w.node(t, reader.Spec.NodeName), reader), "ok read /data/volprobe.txt ext4 "+text; line != want {
				t.Errorf("pod on the %s claim reports %q, want %q", c.name, line, want)
			}
		})
	}
}
