package chartpods

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/e2e/tenantlb"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

func objectMeta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

// TestChartsAsPods: the charts' pods run from the pushed images on the nodes they belong on,
// and each product story works only through Kubernetes objects.
func TestChartsAsPods(t *testing.T) {
	w := requireWorld(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("state of the releases:\n%s", w.dump(context.Background()))
		}
	})
	t.Logf("world up in %s: install %s (helm install → every pod Ready %s); tenant nodes initialised by the ccm pod %s after the first started",
		w.started.Round(time.Millisecond), w.release.Took.Round(time.Millisecond), w.release.Ready.Round(time.Millisecond), w.nodesReady.Round(time.Millisecond))

	t.Run("pods", func(t *testing.T) {
		components := map[string]bool{}
		for _, p := range w.release.ManagementPods {
			components[p.Labels["app.kubernetes.io/component"]] = true
			if p.Spec.NodeName != w.mgmt.Name {
				t.Errorf("%s runs on %s, want the management node", p.Name, p.Spec.NodeName)
			}
			for _, s := range p.Status.ContainerStatuses {
				t.Logf("management %s/%s: %s", p.Name, s.Name, s.ImageID)
			}
		}
		for _, c := range []string{"ccm", "csi-controller", "autoscaler-provider", "cluster-autoscaler"} {
			if !components[c] {
				t.Errorf("no %s pod in the management release: %v", c, components)
			}
		}
		onNodes := map[string]bool{}
		for _, p := range w.release.TenantPods {
			onNodes[p.Spec.NodeName] = true
			for _, s := range p.Status.ContainerStatuses {
				t.Logf("tenant %s/%s on %s: %s", p.Name, s.Name, p.Spec.NodeName, s.ImageID)
			}
		}
		for _, n := range w.nodes {
			if !onNodes[n.Name] {
				t.Errorf("no csi-node pod on %s: %v", n.Name, onNodes)
			}
		}
	})

	t.Run("LoadBalancer IP from the ccm pod", func(t *testing.T) {
		ctx := harness.TestContext(t, 3*time.Minute)
		start := time.Now()
		svc, err := tenantlb.Create(ctx, env.Tenant.Client, "lb", "web")
		if err != nil {
			t.Fatal(err)
		}
		var ip netip.Addr
		harness.Eventually(t, ctx, 2*time.Minute, "the tenant Service's LoadBalancer IP", func(ctx context.Context) (bool, error) {
			if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
				return false, err
			}
			for _, in := range svc.Status.LoadBalancer.Ingress {
				ip, err = netip.ParseAddr(in.IP)
				return err == nil, err
			}
			return false, nil
		})
		t.Logf("Service type=LoadBalancer → IP %s in %s", ip, time.Since(start).Round(time.Millisecond))
		// The grant's pool (deploy/examples/management-values.yaml), its addresses as Install made it.
		if pool := netip.MustParsePrefix("198.51.100.0/28"); !pool.Contains(ip) {
			t.Errorf("IP %s is not from the granted pool tenant-public (%s)", ip, pool)
		}
		infraSvcs := &corev1.ServiceList{}
		if err := env.Management.Client.List(ctx, infraSvcs, client.InNamespace(infraNS)); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range infraSvcs.Items {
			for _, in := range s.Status.LoadBalancer.Ingress {
				found = found || in.IP == ip.String()
			}
		}
		if !found {
			t.Errorf("no infra Service in %s holds %s", infraNS, ip)
		}
	})

	t.Run("PVC and pod get a formatted disk", func(t *testing.T) {
		ctx := harness.TestContext(t, 5*time.Minute)
		ns := env.Tenant.UserNamespace(t, ctx, "vol")
		start := time.Now()
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("512Mi")}},
			}, // the chart's default class, tenantcloud
		}
		const text = "written-through-the-charts"
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "writer"},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "app", Image: node.VolProbeImage, ImagePullPolicy: corev1.PullNever,
					Args: []string{"fs", "/data", text}, VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
				Volumes:                       []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name}}}},
				TerminationGracePeriodSeconds: ptr.To[int64](1),
			},
		}
		for _, obj := range []client.Object{pvc, pod} {
			if err := env.Tenant.Client.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_ = env.Tenant.Client.Delete(ctx, pod, client.GracePeriodSeconds(0))
			_ = env.Tenant.Client.Delete(ctx, pvc)
		})
		harness.Eventually(t, ctx, 4*time.Minute, "the pod Running with its volume", func(ctx context.Context) (bool, error) {
			if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return false, err
			}
			if pod.Status.Phase == corev1.PodFailed {
				return false, fmt.Errorf("pod failed: %s", pod.Status.Message)
			}
			return pod.Status.Phase == corev1.PodRunning, nil
		})
		t.Logf("PVC + pod created → pod Running with the volume in %s (node %s)", time.Since(start).Round(time.Millisecond), pod.Spec.NodeName)
		n := w.node(t, pod.Spec.NodeName)
		var line string
		harness.Eventually(t, ctx, time.Minute, "the pod's report", func(context.Context) (bool, error) {
			log, err := n.ContainerLog(pod.Namespace, pod.Name, string(pod.UID), "app")
			line = strings.TrimSpace(log)
			return line != "", err
		})
		if want := "ok fs /data/volprobe.txt ext4 " + text; line != want {
			t.Errorf("pod reports %q, want %q", line, want)
		}
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil {
			t.Fatal(err)
		}
		// Made by the csi-controller pod in the tenant's infra namespace, on the granted class.
		dvs := &cdiv1.DataVolumeList{}
		if err := env.Management.Client.List(ctx, dvs, client.InNamespace(infraNS)); err != nil {
			t.Fatal(err)
		}
		var classes []string
		for _, dv := range dvs.Items {
			if dv.Spec.Storage != nil {
				classes = append(classes, ptr.Deref(dv.Spec.Storage.StorageClassName, ""))
			}
		}
		if len(dvs.Items) != 1 || classes[0] != "tenant-linstor" {
			t.Errorf("DataVolumes in %s: %d on classes %v, want one on tenant-linstor", infraNS, len(dvs.Items), classes)
		}
		if disks := w.sim.Disks.Disks(infraNS, n.Name); len(disks) != 1 {
			t.Errorf("disks of VM %s: %v, want the claim's", n.Name, disks)
		}
	})

	t.Run("cluster-autoscaler pod scales up through the autoscaler-provider pod", func(t *testing.T) {
		ctx := harness.TestContext(t, 4*time.Minute)
		ns := env.Tenant.UserNamespace(t, ctx, "scale")
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "needs-a-worker"},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{runLabel: "yes"},
				Containers: []corev1.Container{{Name: "app", Image: node.PauseImage, ImagePullPolicy: corev1.PullNever,
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}}},
			},
		}
		start := time.Now()
		if err := env.Tenant.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		// Cleanups run last-first: the pod goes (at once: its worker may be simulated) before
		// the worker it may sit on is drained.
		t.Cleanup(func() { scaleToZero(t) })
		t.Cleanup(func() { _ = env.Tenant.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
		md := &clusterv1.MachineDeployment{}
		harness.Eventually(t, ctx, 3*time.Minute, "cluster-autoscaler to raise the MachineDeployment", func(ctx context.Context) (bool, error) {
			if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: infraNS, Name: group}, md); err != nil {
				return false, err
			}
			return ptr.Deref(md.Spec.Replicas, 0) >= 1, nil
		})
		t.Logf("pod that fits no node → MachineDeployment %s at %d replica(s) in %s", group, ptr.Deref(md.Spec.Replicas, 0), time.Since(start).Round(time.Millisecond))
		// The decision is cluster-autoscaler's, told to the pod by the tenant's Events.
		harness.Eventually(t, ctx, time.Minute, "the TriggeredScaleUp Event on the pod", func(ctx context.Context) (bool, error) {
			events := &corev1.EventList{}
			if err := env.Tenant.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
				return false, err
			}
			for _, e := range events.Items {
				if e.InvolvedObject.Name == pod.Name && e.Reason == "TriggeredScaleUp" {
					return true, nil
				}
			}
			return false, nil
		})
	})

	// Last, after every story: each component made requests as the identity the charts give
	// it and the charts' roles refused none of them.
	t.Run("audit: every identity made requests, none refused", func(t *testing.T) {
		got, err := w.release.CheckAudit(w.release.Started)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("audited requests since helm install: %s", got)
	})
}

func (w *world) node(t *testing.T, name string) *node.Node {
	t.Helper()
	for _, n := range w.nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("pod ran on %q, not on a real tenant node", name)
	return nil
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// scaleToZero takes the autoscaled group back to no workers and waits until their Nodes are
// gone, as cluster-autoscaler would once the pod left (scale-down is off here to keep the
// story short). A worker left behind is simulated: no kubelet finishes the deletion of the
// csi-node pod the DaemonSet put on it, so uninstalling the tenant chart would wait forever;
// with the Node gone the pod garbage collector removes that pod.
func scaleToZero(t *testing.T) {
	ctx := harness.TestContext(t, 3*time.Minute)
	md := &clusterv1.MachineDeployment{}
	if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: infraNS, Name: group}, md); err != nil {
		t.Fatalf("reading MachineDeployment %s: %v", group, err)
	}
	base := md.DeepCopy()
	md.Spec.Replicas = ptr.To[int32](0)
	if err := env.Management.Client.Patch(ctx, md, client.MergeFrom(base)); err != nil {
		t.Fatalf("scaling MachineDeployment %s to 0: %v", group, err)
	}
	harness.Eventually(t, ctx, 3*time.Minute, "the scaled-up worker's Node to go", func(ctx context.Context) (bool, error) {
		nodes := &corev1.NodeList{}
		if err := env.Tenant.Client.List(ctx, nodes, client.MatchingLabels{runLabel: "yes"}); err != nil {
			return false, err
		}
		return len(nodes.Items) == 0, nil
	})
}
