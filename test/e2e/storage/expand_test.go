package storage

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestExpandWhileRunning is story 3 for xfs: the user grows the claim of a running pod and the
// pod's file system grows with it — the real external-resizer expands the DataVolume (the
// simulated guest disk grows), the kubelet asks csi-node to grow the file system online
// (xfs_growfs on the mounted volume), and the claim reports the new capacity.
func TestExpandWhileRunning(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	class := xfsClass("tenantcloud-xfs-grow")
	create(t, ctx, class)
	ns := userNamespace(t, ctx, "story3")
	pvc := userClaim(t, ctx, ns, "grow", class.Name, false)
	pod := userPod(t, ctx, pvc, "grower", "", "fs", "/data", "before-growth")
	n := w.node(t, pod.Spec.NodeName)
	if line := podReport(t, ctx, n, pod); !strings.HasPrefix(line, "ok fs /data/volprobe.txt xfs ") {
		t.Fatalf("pod reports %q", line)
	}
	pv := pvc.Spec.VolumeName
	before, err := fsBytes(ctx, w, n.Name, pod, pv)
	if err != nil {
		t.Fatal(err)
	}
	want := resource.MustParse("1Gi")
	start := time.Now()
	patch := client.MergeFrom(pvc.DeepCopy())
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = want
	if err := env.Tenant.Client.Patch(ctx, pvc, patch); err != nil {
		t.Fatal(err)
	}
	var after int64
	harness.Eventually(t, ctx, volumeWait, "the claim and the pod's file system grown to 1Gi", func(ctx context.Context) (bool, error) {
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil {
			return false, err
		}
		var err error
		if after, err = fsBytes(ctx, w, n.Name, pod, pv); err != nil {
			return false, err
		}
		return pvc.Status.Capacity.Storage().Cmp(want) >= 0 && after > before+400<<20, nil
	})
	t.Logf("claim grown 512Mi → %s, the running pod's xfs %d → %d MiB, in %s", pvc.Status.Capacity.Storage(), before>>20, after>>20, time.Since(start).Round(time.Millisecond))
	if out, err := n.Command(ctx, "cat", path.Join(n.KubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", pv, "mount", "volprobe.txt")).CombinedOutput(); err != nil || string(out) != "before-growth" {
		t.Errorf("after the growth the file holds %q (%v)", out, err)
	}
}

// fsBytes is the size of the file system the pod's volume is mounted from, as the node sees
// the kubelet's mount for the pod (stat -f: blocks × block size).
func fsBytes(ctx context.Context, w *world, nodeName string, pod *corev1.Pod, pv string) (int64, error) {
	n := w.nodes[0]
	for _, c := range w.nodes {
		if c.Name == nodeName {
			n = c
		}
	}
	mount := path.Join(n.KubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", pv, "mount")
	out, err := n.Command(ctx, "stat", "-f", "-c", "%b %S", mount).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("stat -f %s: %w: %s", mount, err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, fmt.Errorf("stat -f %s: %q", mount, out)
	}
	blocks, err1 := strconv.ParseInt(f[0], 10, 64)
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat -f %s: %q", mount, out)
	}
	return blocks * size, nil
}
