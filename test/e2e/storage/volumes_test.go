package storage

import (
	"context"
	"fmt"
	"path"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

// volumeWait bounds each user-visible step (binding, attaching, mounting) on a loaded machine.
const volumeWait = 3 * time.Minute

// TestVolumeWritten is story 1: a PVC (Filesystem ext4 from the chart's default class,
// Filesystem xfs from a class of the user's, Block) used by a pod is bound, the pod runs and
// writes to it, and the data is where the user expects it: in the file system (of the asked
// type) the kubelet mounted for the pod, or on the raw device; in the management cluster the
// claim's disk is hot-plugged into the VM of the pod's node.
func TestVolumeWritten(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	xfs := xfsClass("tenantcloud-xfs")
	create(t, ctx, xfs)
	ns := userNamespace(t, ctx, "story1")
	for _, tcase := range []struct {
		name, class string
		block       bool
		fs          string
	}{
		{"ext4", storageClass, false, "ext4"},
		{"xfs", xfs.Name, false, "xfs"},
		{"block", storageClass, true, ""},
	} {
		t.Run(tcase.name, func(t *testing.T) {
			start := time.Now()
			pvc, pod := userVolume(t, ctx, ns, "vol-"+tcase.name, tcase.class, tcase.block)
			t.Logf("PVC + pod created → pod Running with the volume: %s (node %s)", time.Since(start).Round(time.Millisecond), pod.Spec.NodeName)
			n := w.node(t, pod.Spec.NodeName)
			text := "written-by-" + pod.Name
			line := podReport(t, ctx, n, pod)
			pv := pvc.Spec.VolumeName
			if tcase.block {
				if !strings.HasPrefix(line, "ok block /dev/xvda 536870912 "+text) {
					t.Errorf("pod reports %q, want the 512 MiB device written", line)
				}
			} else {
				want := fmt.Sprintf("ok fs /data/volprobe.txt %s %s", tcase.fs, text)
				if line != want {
					t.Errorf("pod reports %q, want %q", line, want)
				}
				// The node's view of the same file: the kubelet's mount for this pod.
				file := path.Join(n.KubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", pv, "mount", "volprobe.txt")
				if out, err := n.Command(ctx, "cat", file).CombinedOutput(); err != nil || string(out) != text {
					t.Errorf("node %s: %s holds %q (%v), want %q", n.Name, file, out, err, text)
				}
			}
			// Management side: the VolumeAttachment the attach-detach controller made is
			// attached, and its disk serial is plugged into the pod's node's VM.
			if serial := attachedSerial(t, ctx, pv, n.Name); !w.plugged(n.Name, serial) {
				t.Errorf("PV %s: attached serial %q; disks of VM %s: %v", pv, serial, n.Name, w.sim.Disks.Disks(infraNS, n.Name))
			}
		})
	}
}

// xfsClass is a StorageClass a user writes for xfs volumes of the tenant's infra class.
func xfsClass(name string) *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: name},
		Provisioner:          tccsi.DriverName,
		Parameters:           map[string]string{"infraStorageClassName": fixture.StorageClass, "csi.storage.k8s.io/fstype": "xfs"},
		ReclaimPolicy:        ptr.To(corev1.PersistentVolumeReclaimDelete),
		AllowVolumeExpansion: ptr.To(true),
		VolumeBindingMode:    ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
	}
}

// userNamespace creates a namespace for a user's objects; its ServiceAccount comes from the
// real controller. Deleted with everything in it at the end.
func userNamespace(t testing.TB, ctx context.Context, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := env.Tenant.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, ctx, time.Minute, "default ServiceAccount in "+ns.Name, func(ctx context.Context) (bool, error) {
		err := env.Tenant.Client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	return ns.Name
}

// userVolume creates a 512 MiB PVC of class and a pod using it (mounted at /data, or as the
// device /dev/xvda) that writes to it, as a user would, and waits until the claim is bound and
// the pod runs. The pod and claim are deleted at the end of the test, and their deletion
// awaited.
func userVolume(t testing.TB, ctx context.Context, ns, name, class string, block bool) (*corev1.PersistentVolumeClaim, *corev1.Pod) {
	t.Helper()
	pvc := userClaim(t, ctx, ns, name, class, block)
	args := []string{"fs", "/data", "written-by-" + name}
	if block {
		args = []string{"block", "/dev/xvda", "written-by-" + name}
	}
	pod := userPod(t, ctx, pvc, name, "", args...)
	return pvc, pod
}

// userClaim creates a 512 MiB PVC of class, deleted (and its deletion awaited) at the end.
func userClaim(t testing.TB, ctx context.Context, ns, name, class string, block bool) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("512Mi")}},
		},
	}
	if block {
		pvc.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
	}
	create(t, ctx, pvc)
	return pvc
}

// userPod runs volprobe with args in a pod named name using the claim (on nodeName if set,
// else where the scheduler puts it) and waits until the claim is bound and the pod runs. It is
// deleted (and its deletion awaited) at the end.
func userPod(t testing.TB, ctx context.Context, pvc *corev1.PersistentVolumeClaim, name, nodeName string, args ...string) *corev1.Pod {
	t.Helper()
	pod := probePod(pvc, name, args...)
	if nodeName != "" {
		pod.Spec.NodeSelector = map[string]string{corev1.LabelHostname: nodeName}
	}
	create(t, ctx, pod)
	waitRunning(t, ctx, pod, pvc)
	return pod
}

// probePod is a pod named name running volprobe with args on the claim (mounted at /data, or
// as the device /dev/xvda); not created yet.
func probePod(pvc *corev1.PersistentVolumeClaim, name string, args ...string) *corev1.Pod {
	app := corev1.Container{Name: "app", Image: node.VolProbeImage, ImagePullPolicy: corev1.PullNever, Args: args}
	if ptr.Deref(pvc.Spec.VolumeMode, corev1.PersistentVolumeFilesystem) == corev1.PersistentVolumeBlock {
		app.VolumeDevices = []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}
	} else {
		app.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: pvc.Namespace, Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{app},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name}}}},
			TerminationGracePeriodSeconds: ptr.To[int64](5),
		},
	}
}

// waitRunning waits until the claim is bound and the pod runs.
func waitRunning(t testing.TB, ctx context.Context, pod *corev1.Pod, pvc *corev1.PersistentVolumeClaim) {
	t.Helper()
	tc := env.Tenant.Client
	harness.Eventually(t, ctx, volumeWait, "pod "+pod.Name+" Running with its volume", func(ctx context.Context) (bool, error) {
		if err := tc.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended %s", pod.Status.Phase)
		}
		if err := tc.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil {
			return false, err
		}
		return pvc.Status.Phase == corev1.ClaimBound && pod.Status.Phase == corev1.PodRunning, nil
	})
}

// create creates o in the tenant and deletes it at the end of the test (in reverse order of
// creation, as cleanups run), waiting until it is gone.
func create(t testing.TB, ctx context.Context, o client.Object) {
	t.Helper()
	tc := env.Tenant.Client
	if err := tc.Create(ctx, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, o) })
}

// deleteAndWait deletes o from the tenant and waits until it is gone (finalizers done).
func deleteAndWait(t testing.TB, o client.Object) {
	t.Helper()
	tc := env.Tenant.Client
	ctx, cancel := context.WithTimeout(context.Background(), volumeWait)
	defer cancel()
	if err := tc.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
	harness.Eventually(t, ctx, volumeWait, "deleted "+o.GetName(), func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(o), o)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// podReport waits for the line volprobe logs on the pod's node.
func podReport(t testing.TB, ctx context.Context, n *node.Node, pod *corev1.Pod) string {
	t.Helper()
	var line string
	harness.Eventually(t, ctx, time.Minute, "the report of pod "+pod.Name, func(context.Context) (bool, error) {
		log, err := n.ContainerLog(pod.Namespace, pod.Name, string(pod.UID), "app")
		line = strings.TrimSpace(log)
		return line != "", err
	})
	return line
}

// attachedSerial is the disk serial of the attached VolumeAttachment of pv on nodeName ("" if none).
func attachedSerial(t testing.TB, ctx context.Context, pv, nodeName string) string {
	t.Helper()
	vas := &storagev1.VolumeAttachmentList{}
	if err := env.Tenant.Client.List(ctx, vas); err != nil {
		t.Fatal(err)
	}
	for _, va := range vas.Items {
		if ptr.Deref(va.Spec.Source.PersistentVolumeName, "") == pv && va.Spec.NodeName == nodeName && va.Status.Attached {
			return va.Status.AttachmentMetadata[tccsi.PublishContextSerial]
		}
	}
	return ""
}

// plugged reports whether a disk with serial is plugged into VM vm (the guest's view).
func (w *world) plugged(vm, serial string) bool {
	for _, d := range w.sim.Disks.Disks(infraNS, vm) {
		if serial != "" && strings.HasPrefix(serial, d.Serial) {
			return true
		}
	}
	return false
}

// node is the real node named name.
func (w *world) node(t testing.TB, name string) *node.Node {
	t.Helper()
	for _, n := range w.nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("pod runs on %q, not on a real node", name)
	return nil
}
