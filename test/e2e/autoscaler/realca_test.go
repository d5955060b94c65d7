package autoscaler_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

// realCA returns bin/cluster-autoscaler, or skips (fails where required: harness.Require).
func realCA(t testing.TB) string {
	t.Helper()
	return harness.Bin(t, "cluster-autoscaler", "hack/bin-cluster-autoscaler.sh")
}

// runCA starts the real cluster-autoscaler against the tenant with the externalgrpc cloud
// provider pointing at addr (plaintext) and caFlags (extraFlags after them, so they win), in
// its own process group, logging to a file whose path it returns. The process group is killed
// in a cleanup.
func runCA(t testing.TB, bin, addr string, extraFlags ...string) string {
	t.Helper()
	logPath, _ := startCA(t, bin, addr, extraFlags...)
	return logPath
}

// startCA is runCA that also returns the process id (for its memory).
func startCA(t testing.TB, bin, addr string, extraFlags ...string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	cloudConfig := filepath.Join(dir, "cloud-config.yaml")
	if err := os.WriteFile(cloudConfig, []byte(fmt.Sprintf("address: %s\ngrpc_timeout: 10s\n", addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "cluster-autoscaler.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(caFlags(cloudConfig), extraFlags...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		_ = logFile.Close()
		if t.Failed() {
			t.Logf("cluster-autoscaler log: %s", logPath)
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("cluster-autoscaler log tail:\n%s", tail(string(b), 150))
			}
		}
	})
	return logPath, cmd.Process.Pid
}

// caFlags runs cluster-autoscaler outside a cluster with every delay cut to a loop or two.
func caFlags(cloudConfig string) []string {
	return []string{
		"--cloud-provider=externalgrpc",
		"--cloud-config=" + cloudConfig,
		"--kubeconfig=" + env.Tenant.Kubeconfig,
		"--namespace=kube-system",
		"--leader-elect=false",
		"--write-status-configmap=false",
		"--address=127.0.0.1:0",
		"--scan-interval=1s",
		"--expander=random",
		"--max-node-provision-time=2m",
		"--scale-down-enabled=true",
		"--scale-down-delay-after-add=1s",
		"--scale-down-delay-after-delete=0s",
		"--scale-down-delay-after-failure=1s",
		"--scale-down-unneeded-time=1s",
		"--scale-down-unready-time=1s",
		"--node-delete-delay-after-taint=0s",
		"--unremovable-node-recheck-timeout=1s",
		"--skip-nodes-with-local-storage=false",
		"--skip-nodes-with-system-pods=false",
		"--v=4",
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// grpcCalls reads the provider's per-method gRPC request counters.
func grpcCalls(t testing.TB, metricsAddr string) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	re := regexp.MustCompile(`(?m)^tenantcloud_autoscaler_grpc_requests_total\{code="([^"]+)",method="([^"]+)"\} (\d+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		n, _ := strconv.Atoi(m[3])
		calls[m[2]+"/"+m[1]] += n
	}
	return calls
}

// TestRealClusterAutoscaler runs the real cluster-autoscaler (externalgrpc) against the
// autoscaler-provider binary and the simulated Cluster API, with the real kube-scheduler: a
// pod that fits no node makes it scale the group up, and once the pod is gone it scales the
// emptied node down through DeleteNodes. From one node, cluster-autoscaler models the new node
// on the existing one; from zero it has only NodeGroupTemplateNodeInfo, so the template's
// v1.Node (labels, allocatable) must survive the provider's hand-written codec and
// cluster-autoscaler's generated protobuf code.
func TestRealClusterAutoscaler(t *testing.T) {
	caBin := realCA(t)
	provider := buildProvider(t, context.Background())
	for _, from := range []int32{1, 0} {
		t.Run(fmt.Sprintf("from-%d", from), func(t *testing.T) { realCAScaleUpAndDown(t, caBin, provider, from) })
	}
}

// realCAScaleUpAndDown runs the scenario on a group of `from` nodes (min `from`, max 3), each
// filled by a pod of 1.5 of its 2 CPUs.
func realCAScaleUpAndDown(t *testing.T, caBin, providerBin string, from int32) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	w := startWorld(t, ctx)
	md := w.createGroup(from, from, 3)
	mdReplicas := func() int32 { return w.mdReplicas(md) }
	readyNodes := w.readyNodes
	w.eventually("the group's nodes", func() bool { return len(readyNodes()) == int(from) })
	if from == 0 {
		w.templateCapacity()
	}

	p := runProvider(t, providerBin, w.ns, simCluster)
	if err := startScheduler(context.Background()); err != nil {
		t.Fatal(err)
	}

	newPod, scheduled := w.newPod, w.scheduled
	var fillers []*corev1.Pod
	for i := range from {
		fillers = append(fillers, newPod(fmt.Sprintf("filler-%d", i)))
	}
	w.eventually("the filler pods to be scheduled", func() bool {
		for _, pod := range fillers {
			if !scheduled(pod) {
				return false
			}
		}
		return true
	})
	pending := newPod("pending")
	w.eventually("the pending pod to be Unschedulable", func() bool {
		if w.tenant.Get(ctx, client.ObjectKeyFromObject(pending), pending) != nil {
			return false
		}
		for _, c := range pending.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true
			}
		}
		return false
	})

	start := time.Now()
	caLog := runCA(t, caBin, p.grpcAddr)
	long := func(what string, cond func() bool) { w.long(p, caLog, what, 90*time.Second, cond) }

	long("cluster-autoscaler to scale the group up", func() bool { return mdReplicas() == from+1 })
	t.Logf("scale-up: MachineDeployment at %d replica(s) %s after cluster-autoscaler started", from+1, time.Since(start).Round(time.Millisecond))
	long("a new Ready node and the pending pod on it", func() bool { return len(readyNodes()) == int(from)+1 && scheduled(pending) })
	calls := grpcCalls(t, p.metricsAddr)
	if calls["NodeGroupIncreaseSize/OK"] == 0 {
		t.Fatalf("no NodeGroupIncreaseSize call reached the provider: %v", calls)
	}
	if from == 0 && calls["NodeGroupTemplateNodeInfo/OK"] == 0 {
		t.Fatalf("scaled from zero without a NodeGroupTemplateNodeInfo call: %v", calls)
	}

	if err := w.tenant.Delete(ctx, pending, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	long("cluster-autoscaler to scale the emptied node down", func() bool {
		return mdReplicas() == from && len(readyNodes()) == int(from)
	})
	t.Logf("scale-down: MachineDeployment back at %d replica(s) %s after the pod went", from, time.Since(down).Round(time.Millisecond))
	calls = grpcCalls(t, p.metricsAddr)
	if calls["NodeGroupDeleteNodes/OK"] == 0 {
		t.Fatalf("no NodeGroupDeleteNodes call reached the provider: %v", calls)
	}
	for i, n := range readyNodes() {
		if n.Name != fillers[i].Spec.NodeName {
			t.Errorf("node %s stayed, the busy one is %s", n.Name, fillers[i].Spec.NodeName)
		}
	}
	t.Logf("provider calls: %v", calls)
}

// createGroup creates the namespace, the Cluster, a KubevirtMachineTemplate of 2 CPUs / 3Gi
// and the MachineDeployment "workers" (min, max) at replicas, whose Nodes carry runLabel;
// the MachineDeployment is torn down in a cleanup.
func (w *world) createGroup(replicas, minSize, maxSize int32) *clusterv1.MachineDeployment {
	w.t.Helper()
	ctx := w.ctx
	if err := w.mgmt.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}); err != nil {
		w.t.Fatal(err)
	}
	declareTemplateCapacity(w.t, ctx)
	for _, obj := range []client.Object{
		capi.NewCluster(w.ns, simCluster),
		capi.NewKubevirtMachineTemplate(w.ns, "worker", simCluster, 2, "3Gi"),
	} {
		if err := w.mgmt.Create(ctx, obj); err != nil {
			w.t.Fatal(err)
		}
	}
	md := capi.NewMachineDeployment(w.ns, "workers", simCluster, "worker", replicas)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: strconv.Itoa(int(minSize)),
		autoscaler.AnnotationMaxSize: strconv.Itoa(int(maxSize))}
	// Synced to the Nodes by Cluster API and selected by the pods: only this group can take
	// them, and from zero the template must promise the label.
	md.Spec.Template.Labels[runLabel] = w.ns
	if err := w.mgmt.Create(ctx, md); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { w.teardown(md) })
	return md
}

// templateCapacity waits until the simulated CAPK published the worker template's capacity:
// from zero nodes it is all cluster-autoscaler knows of a node, and it caches the template.
func (w *world) templateCapacity() {
	w.t.Helper()
	w.eventually("KubevirtMachineTemplate status.capacity", func() bool {
		u := capi.NewKubevirtMachineTemplate(w.ns, "worker", simCluster, 2, "3Gi")
		if err := w.mgmt.Get(w.ctx, client.ObjectKeyFromObject(u), u); err != nil {
			return false
		}
		_, ok, _ := unstructured.NestedMap(u.Object, "status", "capacity")
		return ok
	})
}

// mdReplicas reads md's replicas from the API (-1 if unreadable).
func (w *world) mdReplicas(md *clusterv1.MachineDeployment) int32 {
	cur := &clusterv1.MachineDeployment{}
	if err := w.mgmt.Get(w.ctx, client.ObjectKeyFromObject(md), cur); err != nil || cur.Spec.Replicas == nil {
		return -1
	}
	return *cur.Spec.Replicas
}

// readyNodes lists this world's Ready tenant Nodes that have a providerID.
func (w *world) readyNodes() []corev1.Node {
	var nodes corev1.NodeList
	if err := w.tenant.List(w.ctx, &nodes, client.MatchingLabels{runLabel: w.ns}); err != nil {
		return nil
	}
	var ready []corev1.Node
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && n.Spec.ProviderID != "" {
				ready = append(ready, n)
			}
		}
	}
	return ready
}

// newPod creates a pod of 1.5 CPUs and 1Gi that only this world's Nodes can take (one per
// node); it is deleted in a cleanup.
func (w *world) newPod(name string) *corev1.Pod {
	w.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name + "-" + w.ns},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{runLabel: w.ns}, Containers: []corev1.Container{{Name: "app", Image: "app",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}}},
	}
	if err := w.tenant.Create(w.ctx, pod); err != nil {
		w.t.Fatal(err)
	}
	// No kubelet confirms a graceful deletion: pods go at once.
	w.t.Cleanup(func() { _ = w.tenant.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	return pod
}

func (w *world) scheduled(pod *corev1.Pod) bool {
	return w.tenant.Get(w.ctx, client.ObjectKeyFromObject(pod), pod) == nil && pod.Spec.NodeName != ""
}

// long waits up to timeout for cond and fails with the provider's and cluster-autoscaler's
// logs.
func (w *world) long(p *process, caLog, what string, timeout time.Duration, cond func() bool) {
	w.t.Helper()
	if err := wait.PollUntilContextTimeout(w.ctx, 100*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		b, _ := os.ReadFile(caLog)
		w.t.Fatalf("waiting for %s: %v; provider calls %v; provider log:\n%s\ncluster-autoscaler log (tail):\n%s",
			what, err, grpcCalls(w.t, p.metricsAddr), tail(p.logs.output(), 60), tail(string(b), 200))
	}
}
