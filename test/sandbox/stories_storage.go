package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

// storyStorage: a user's PVC of the chart's StorageClass and a pod using it on one node; the
// real external-provisioner, PV binder, attach-detach controller, external-attacher, kubelet
// and csi-node give the pod a formatted disk it writes to. The pod is deleted and recreated
// on the other node, and finds its file there: the disk followed it. Then the user deletes
// both and the disk goes.
func (s *sandbox) storyStorage(ctx context.Context) error {
	tenant := s.env.Tenant.Client
	nodes, err := s.realNodeNames(ctx)
	if err != nil {
		return err
	}
	if len(nodes) < 2 {
		return fmt.Errorf("the PVC story needs two real nodes, have %v", nodes)
	}
	a, b := nodes[0], nodes[1]
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(storageClass),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("256Mi")}},
		},
	}
	step("user: kubectl create PVC default/data (256Mi, StorageClass %s) and pod default/writer on %s writing /data/volprobe.txt", storageClass, a)
	t0 := time.Now()
	if err := tenant.Create(ctx, pvc); err != nil {
		return fmt.Errorf("creating PVC default/data: %w", err)
	}
	writer, line, err := s.volumePod(ctx, pvc, "writer", a, "fs", "/data", "written-on-"+a)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "ok fs /data/volprobe.txt ext4 written-on-") {
		return fmt.Errorf("pod default/writer reports %q, want the file written on ext4", line)
	}
	if err := tenant.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil {
		return err
	}
	serial, err := s.attachedSerial(ctx, pvc.Spec.VolumeName, a)
	if err != nil {
		return err
	}
	ok("PVC Bound (PV %s), disk %s hot-plugged into VM %s, ext4 formatted and mounted; pod Running and reports %q (took %s)",
		pvc.Spec.VolumeName, serial, a, line, since(t0))

	step("user: kubectl delete pod default/writer; kubectl create pod default/reader on %s reading the same PVC", b)
	t0 = time.Now()
	if err := s.deleteAndWait(ctx, writer); err != nil {
		return err
	}
	reader, line, err := s.volumePod(ctx, pvc, "reader", b, "read", "/data", "-")
	if err != nil {
		return err
	}
	if want := "ok read /data/volprobe.txt ext4 written-on-" + a; line != want {
		return fmt.Errorf("pod default/reader on %s reports %q, want %q", b, line, want)
	}
	moved, err := s.attachedSerial(ctx, pvc.Spec.VolumeName, b)
	if err != nil {
		return err
	}
	if s.plugged(a, serial) || !s.plugged(b, serial) {
		return fmt.Errorf("disk %s: plugged into %s %v, into %s %v; want it moved", serial, a, s.plugged(a, serial), b, s.plugged(b, serial))
	}
	ok("the pod moved %s → %s and its data followed: disk %s unplugged from VM %s, plugged into VM %s; reader reports %q (took %s)",
		a, b, moved, a, b, line, since(t0))

	step("user: kubectl delete pod default/reader pvc/data")
	t0 = time.Now()
	pv := pvc.Spec.VolumeName
	if err := s.deleteAndWait(ctx, reader); err != nil {
		return err
	}
	if err := s.deleteAndWait(ctx, pvc); err != nil {
		return err
	}
	if err := poll(ctx, "PV "+pv+" deleted and its disk unplugged", func(ctx context.Context) (bool, error) {
		err := tenant.Get(ctx, client.ObjectKey{Name: pv}, &corev1.PersistentVolume{})
		return apierrors.IsNotFound(err) && !s.plugged(b, serial), client.IgnoreNotFound(err)
	}); err != nil {
		return err
	}
	ok("PV %s deleted, its DataVolume and disk gone (took %s)", pv, since(t0))
	return nil
}

// realNodeNames lists the tenant Nodes that are real kubelet nodes, by name.
func (s *sandbox) realNodeNames(ctx context.Context) ([]string, error) {
	var list corev1.NodeList
	if err := s.env.Tenant.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	var names []string
	for _, n := range list.Items {
		if s.workers.node(n.Name) != nil && node.Ready(&n) {
			names = append(names, n.Name)
		}
	}
	return names, nil
}

// volumePod creates a pod on nodeName running volprobe with args on the claim mounted at
// /data, waits until it runs, and returns it with the line volprobe reported.
func (s *sandbox) volumePod(ctx context.Context, pvc *corev1.PersistentVolumeClaim, name, nodeName string, args ...string) (*corev1.Pod, string, error) {
	tenant := s.env.Tenant.Client
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: pvc.Namespace, Name: name},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{corev1.LabelHostname: nodeName},
			Containers: []corev1.Container{{Name: "app", Image: node.VolProbeImage, ImagePullPolicy: corev1.PullNever, Args: args,
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name}}}},
			TerminationGracePeriodSeconds: ptr.To[int64](5),
		},
	}
	if err := tenant.Create(ctx, pod); err != nil {
		return nil, "", fmt.Errorf("creating pod %s/%s: %w", pod.Namespace, name, err)
	}
	n := s.workers.node(nodeName)
	var line string
	err := poll(ctx, fmt.Sprintf("pod %s/%s Running on %s with its volume and reporting", pod.Namespace, name, nodeName), func(ctx context.Context) (bool, error) {
		if err := tenant.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended %s", pod.Status.Phase)
		}
		if pod.Status.Phase != corev1.PodRunning || n == nil {
			return false, nil
		}
		log, err := n.ContainerLog(pod.Namespace, pod.Name, string(pod.UID), "app")
		line = strings.TrimSpace(log)
		return line != "", err
	})
	if err != nil {
		return nil, "", fmt.Errorf("%w (events: %s)", err, s.events(ctx, pod.Namespace, pod.Name))
	}
	return pod, line, nil
}

// events is what kubectl describe would show of the object's Events, one line.
func (s *sandbox) events(ctx context.Context, ns, name string) string {
	var list corev1.EventList
	if err := s.env.Tenant.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e.Type+" "+e.Reason+": "+e.Message)
		}
	}
	return strings.Join(out, "; ")
}

// deleteAndWait deletes o from the tenant and waits until it is gone.
func (s *sandbox) deleteAndWait(ctx context.Context, o client.Object) error {
	tenant := s.env.Tenant.Client
	if err := tenant.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting %s: %w", o.GetName(), err)
	}
	return poll(ctx, o.GetName()+" deleted", func(ctx context.Context) (bool, error) {
		err := tenant.Get(ctx, client.ObjectKeyFromObject(o), o)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// attachedSerial is the disk serial csi-controller reported attaching pv to nodeName.
func (s *sandbox) attachedSerial(ctx context.Context, pv, nodeName string) (string, error) {
	var serial string
	err := poll(ctx, "VolumeAttachment of "+pv+" to "+nodeName+" attached", func(ctx context.Context) (bool, error) {
		var vas storagev1.VolumeAttachmentList
		if err := s.env.Tenant.Client.List(ctx, &vas); err != nil {
			return false, err
		}
		for _, va := range vas.Items {
			if ptr.Deref(va.Spec.Source.PersistentVolumeName, "") == pv && va.Spec.NodeName == nodeName && va.Status.Attached {
				serial = va.Status.AttachmentMetadata[tccsi.PublishContextSerial]
				return serial != "", nil
			}
		}
		return false, nil
	})
	return serial, err
}

// plugged reports whether a disk with serial is plugged into VM vm (the guest's view).
func (s *sandbox) plugged(vm, serial string) bool {
	for _, d := range s.sim.Disks.Disks(infraNS, vm) {
		if serial != "" && strings.HasPrefix(serial, d.Serial) {
			return true
		}
	}
	return false
}
