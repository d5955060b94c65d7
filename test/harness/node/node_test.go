package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

func clientKey(name string) client.ObjectKey { return client.ObjectKey{Name: name} }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// logNodes adds the nodes' log tails to a failed test.
func logNodes(t *testing.T, w *nodeWorld) {
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range w.nodes {
				t.Logf("%s kubelet:\n%s\ncontainerd:\n%s\nkube-proxy:\n%s", n.Name, n.Log("kubelet", 4000), n.Log("containerd", 2000), n.Log("kube-proxy", 2000))
			}
		}
	})
}

// TestNodesRegisterAndAreInitialised: each real kubelet registered its Node with the VM's
// providerID and address, and the real ccm initialised it (taint lifted, addresses from the
// VMI), so it is Ready and schedulable.
func TestNodesRegisterAndAreInitialised(t *testing.T) {
	w := requireNodes(t)
	ctx := testCtx(t)
	t.Logf("two real nodes Ready and initialised %s after the first started", w.ready.Round(time.Millisecond))
	for _, vm := range w.vms {
		n := &corev1.Node{}
		if err := env.Tenant.Client.Get(ctx, clientKey(vm), n); err != nil {
			t.Fatal(err)
		}
		if n.Spec.ProviderID != "kubevirt://"+vm {
			t.Errorf("%s: providerID %q, want kubevirt://%s", vm, n.Spec.ProviderID, vm)
		}
		if !node.Ready(n) {
			t.Errorf("%s: not Ready and initialised: taints %v, conditions %v", vm, n.Spec.Taints, n.Status.Conditions)
		}
		if !slices.ContainsFunc(n.Status.Addresses, func(a corev1.NodeAddress) bool {
			return a.Type == corev1.NodeInternalIP && a.Address == w.ips[vm].String()
		}) {
			t.Errorf("%s: addresses %v lack the VM's %s", vm, n.Status.Addresses, w.ips[vm])
		}
		if v := n.Status.NodeInfo.KubeletVersion; v != "v1.36.2" {
			t.Errorf("%s: kubelet version %q, want v1.36.2", vm, v)
		}
		if !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://1.6") {
			t.Errorf("%s: runtime %q, want containerd 1.6", vm, n.Status.NodeInfo.ContainerRuntimeVersion)
		}
	}
}

// TestPodReachesAPIServerThroughService: a pod from a locally built image, scheduled by the
// real scheduler onto a real node, gets an address from the node's pod network and reaches
// the apiserver through the kubernetes Service (kube-proxy's rules), where its projected
// token authenticates it as its ServiceAccount, bound to this very pod.
func TestPodReachesAPIServerThroughService(t *testing.T) {
	w := requireNodes(t)
	logNodes(t, w)
	ctx := testCtx(t)
	ns := createNamespace(t, ctx, "probe")
	svc := &corev1.Service{}
	if err := env.Tenant.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "kubernetes"}, svc); err != nil {
		t.Fatal(err)
	}
	for _, vm := range w.vms {
		pod := probePod(ns, "probe-"+vm, vm)
		start := time.Now()
		if err := env.Tenant.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, ctx, 2*time.Minute, "probe pod on "+vm+" to finish", func(ctx context.Context) (bool, error) {
			if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return false, err
			}
			return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed, nil
		})
		t.Logf("probe pod on %s: created → %s in %s", vm, pod.Status.Phase, time.Since(start).Round(time.Millisecond))
		if pod.Spec.NodeName != vm {
			t.Errorf("pod ran on %q, want %s", pod.Spec.NodeName, vm)
		}
		if ip, err := netip.ParseAddr(pod.Status.PodIP); err != nil || !w.cidrs[vm].Contains(ip) {
			t.Errorf("pod IP %q not in %s's pod network %s", pod.Status.PodIP, vm, w.cidrs[vm])
		}
		msg := terminationMessage(pod)
		want := fmt.Sprintf("ok user=system:serviceaccount:%s:default pod-uid=%s via %s:443", ns, pod.UID, svc.Spec.ClusterIP)
		if pod.Status.Phase != corev1.PodSucceeded || msg != want {
			t.Errorf("probe on %s: phase %s, message %q, want %q", vm, pod.Status.Phase, msg, want)
		}
	}
}

// TestNodeSeesItsVMDisks: a disk hot-plugged into one VM appears in that node's
// /dev/disk/by-id, and only there; unplugged, it is gone.
func TestNodeSeesItsVMDisks(t *testing.T) {
	w := requireNodes(t)
	ctx := testCtx(t)
	a, b := w.nodes[0], w.nodes[1]
	const serial = "realnode-disk-1"
	if _, err := w.sim.Disks.Plug(ctx, infraNS, a.Name, "claim-disk-1", 1<<20, serial, "virtio"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.sim.Disks.Unplug(infraNS, a.Name, "claim-disk-1") })
	link := "/dev/disk/by-id/virtio-" + serial
	if out, err := a.Command(ctx, "test", "-b", link).CombinedOutput(); err != nil {
		t.Errorf("%s does not see %s as a block device: %v %s", a.Name, link, err, out)
	}
	if out, err := b.Command(ctx, "ls", "/dev/disk/by-id").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("%s sees %q in /dev/disk/by-id (%v), want nothing", b.Name, out, err)
	}
	if err := w.sim.Disks.Unplug(infraNS, a.Name, "claim-disk-1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Command(ctx, "test", "-e", link).Run(); err == nil {
		t.Errorf("%s still sees %s after the unplug", a.Name, link)
	}
}

// TestCSINodeRegistersWithKubelet runs csi-node with built-in plugin registration on a real
// node: the real kubelet finds its socket in plugins_registry, registers the driver and
// writes the CSINode entry with the node ID csi-node reports (the VM's name, read from the
// Node's providerID). Stopped, csi-node removes the socket and the kubelet deregisters it.
func TestCSINodeRegistersWithKubelet(t *testing.T) {
	w := requireNodes(t)
	logNodes(t, w)
	ctx := testCtx(t)
	n := w.nodes[0]
	const driver = "csi.tenantcloud.io"
	cfg, err := yaml.Marshal(map[string]any{"clusterName": cluster, "infraNamespace": infraNS, "tenantKubeconfig": env.Tenant.Kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(n.Dir, "csi-node.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(n.KubeletDir, "plugins", driver, "csi.sock")
	p, err := n.StartProcess("csi-node", filepath.Join(w.dir, "csi-node"),
		"--config", cfgPath, "--node-name", n.Name, "--endpoint", "unix://"+sock,
		"--kubelet-dir", n.KubeletDir, "--device-dir", "/dev/disk/by-id", "--max-volumes-per-node", "7",
		"--plugin-registration-dir", filepath.Join(n.KubeletDir, "plugins_registry"),
		"--metrics-bind-address=0", "--v=4")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop()
		if t.Failed() {
			t.Logf("csi-node:\n%s", p.Log(4000))
		}
	})
	start := time.Now()
	csiNode := &storagev1.CSINode{}
	harness.Eventually(t, ctx, time.Minute, "the kubelet to register "+driver+" in CSINode "+n.Name, func(ctx context.Context) (bool, error) {
		if exited, err := p.Exited(); exited {
			return false, fmt.Errorf("csi-node exited: %v", err)
		}
		if err := env.Tenant.Client.Get(ctx, clientKey(n.Name), csiNode); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return slices.ContainsFunc(csiNode.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == driver }), nil
	})
	t.Logf("csi-node started → driver in CSINode in %s", time.Since(start).Round(time.Millisecond))
	d := csiNode.Spec.Drivers[slices.IndexFunc(csiNode.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == driver })]
	if d.NodeID != n.Name || d.Allocatable == nil || ptr.Deref(d.Allocatable.Count, 0) != 7 {
		t.Errorf("CSINode driver = %+v (allocatable %v), want node ID %s, 7 volumes", d, d.Allocatable, n.Name)
	}
	k8sNode := &corev1.Node{}
	if err := env.Tenant.Client.Get(ctx, clientKey(n.Name), k8sNode); err != nil {
		t.Fatal(err)
	}
	if ann := k8sNode.Annotations["csi.volume.kubernetes.io/nodeid"]; !strings.Contains(ann, `"`+driver+`":"`+n.Name+`"`) {
		t.Errorf("Node annotation csi.volume.kubernetes.io/nodeid = %q, want %s → %s", ann, driver, n.Name)
	}

	if err := syscall.Kill(p.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	harness.Eventually(t, ctx, time.Minute, "the kubelet to deregister "+driver, func(ctx context.Context) (bool, error) {
		if err := env.Tenant.Client.Get(ctx, clientKey(n.Name), csiNode); err != nil {
			return false, err
		}
		return !slices.ContainsFunc(csiNode.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == driver }), nil
	})
}

func createNamespace(t *testing.T, ctx context.Context, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := env.Tenant.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	// The real serviceaccount controller creates the default ServiceAccount.
	harness.Eventually(t, ctx, time.Minute, "default ServiceAccount in "+ns.Name, func(ctx context.Context) (bool, error) {
		err := env.Tenant.Client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	t.Cleanup(func() {
		if err := env.Tenant.Client.Delete(context.Background(), ns); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})
	return ns.Name
}

// probePod runs apiprobe on vm. Its kube-api-access volume comes from the ServiceAccount
// admission plugin, as in a cluster.
func probePod(ns, name, vm string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			NodeSelector:  map[string]string{corev1.LabelHostname: vm},
			Containers:    []corev1.Container{{Name: "probe", Image: node.APIProbeImage, ImagePullPolicy: corev1.PullNever}},
		},
	}
}

func terminationMessage(pod *corev1.Pod) string {
	for _, s := range pod.Status.ContainerStatuses {
		if s.State.Terminated != nil {
			return strings.TrimSpace(s.State.Terminated.Message)
		}
	}
	return ""
}
