package storage

import (
	"context"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestExpandWhileRunning is story 3: the user grows the claim of a running pod. xfs: the real
// external-resizer expands the DataVolume (the simulated guest disk grows), the kubelet has
// csi-node grow the mounted file system online (xfs_growfs), the claim reports the new capacity
// and the pod's file system is larger. ext4: the same, except where the node lacks
// CAP_SYS_RESOURCE (this CI machine; a real node's privileged csi-node pod has it), which
// ext4's online resize ioctl checks — there the user sees the kubelet's Warning Event carrying
// csi-node's error, and the file system keeps its size.
func TestExpandWhileRunning(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	class := xfsClass("tenantcloud-xfs-grow")
	create(t, ctx, class)
	ns := userNamespace(t, ctx, "story3")
	for _, tc := range []struct{ fs, class string }{{"xfs", class.Name}, {"ext4", storageClass}} {
		t.Run(tc.fs, func(t *testing.T) {
			pvc := userClaim(t, ctx, ns, "grow-"+tc.fs, tc.class, false)
			pod := userPod(t, ctx, pvc, "grower-"+tc.fs, "", "fs", "/data", "before-growth")
			n := w.node(t, pod.Spec.NodeName)
			if line := podReport(t, ctx, n, pod); !strings.HasPrefix(line, "ok fs /data/volprobe.txt "+tc.fs+" ") {
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
			if tc.fs == "ext4" && !hasCapSysResource() {
				var reason, msg string
				harness.Eventually(t, ctx, volumeWait, "a Warning Event carrying csi-node's error", func(ctx context.Context) (bool, error) {
					events := &corev1.EventList{}
					if err := env.Tenant.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
						return false, err
					}
					for _, e := range events.Items {
						if (e.InvolvedObject.UID == pod.UID || e.InvolvedObject.UID == pvc.UID) && e.Type == corev1.EventTypeWarning &&
							strings.Contains(e.Message, "growing the filesystem of disk") {
							reason, msg = e.InvolvedObject.Kind+" "+e.Reason, e.Message
							return true, nil
						}
					}
					return false, nil
				})
				t.Logf("the user sees, %s after the patch: %s: %s", time.Since(start).Round(time.Millisecond), reason, msg)
				// The reason, not only resize2fs's version banner that comes first in its output.
				if !strings.Contains(msg, "Permission denied") {
					t.Errorf("the Event does not say why the resize failed: %q", msg)
				}
				if now, err := fsBytes(ctx, w, n.Name, pod, pv); err != nil || now != before {
					t.Errorf("ext4 went %d → %d bytes (%v) although its resize failed", before, now, err)
				}
				return
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
			t.Logf("claim grown 512Mi → %s, the running pod's %s %d → %d MiB, in %s", pvc.Status.Capacity.Storage(), tc.fs, before>>20, after>>20, time.Since(start).Round(time.Millisecond))
			if out, err := n.Command(ctx, "cat", path.Join(n.KubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", pv, "mount", "volprobe.txt")).CombinedOutput(); err != nil || string(out) != "before-growth" {
				t.Errorf("after the growth the file holds %q (%v)", out, err)
			}
		})
	}
}

// hasCapSysResource reports whether this machine's processes (the nodes' csi-node pods are
// privileged, so they get what the host has) hold CAP_SYS_RESOURCE.
func hasCapSysResource() bool {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			v, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && v&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
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
