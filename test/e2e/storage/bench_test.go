package storage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/bench/stats"
)

// BenchmarkPVCToPodRunning is what a user waits for: a PVC of the chart's class (ext4,
// WaitForFirstConsumer) and a pod using it created together → the pod Running with its volume
// mounted (scheduling, the real csi-provisioner and PV binder, csi-controller creating the
// DataVolume, the attach-detach controller and csi-attacher hot-plugging it, the kubelet
// having csi-node format, stage and publish it). The simulators run without phase delays, so
// the figure is the tenant's components and ours, not a backend's. One iteration is one
// volume; pod and claim are deleted untimed between iterations, so they do not pile up.
func BenchmarkPVCToPodRunning(b *testing.B) {
	requireWorld(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	ns := userNamespace(b, ctx, "bench")
	var running stats.Latencies
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		pvc := userClaim(b, ctx, ns, name, storageClass, false)
		pod := userPod(b, ctx, pvc, name, "", "fs", "/data", name)
		running.Since(start)
		b.StopTimer()
		deleteAndWait(b, pod)
		deleteAndWait(b, pvc)
		b.StartTimer()
	}
	b.StopTimer()
	running.Report(b, "pvc-to-running")
}
