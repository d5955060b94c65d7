package csinode

import (
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// BenchmarkStagePublish measures NodeStageVolume of an already formatted disk (mkfs excluded,
// blkid + fsck + mount included) followed by NodePublishVolume, over gRPC, and reports both
// parts. Each iteration also unpublishes and unstages, untimed.
func BenchmarkStagePublish(b *testing.B) {
	for _, fsType := range []string{"ext4", "xfs"} {
		b.Run(fsType, func(b *testing.B) {
			e := newEnv(b)
			v := e.newVM("vm-a")
			vol := "pvc-bench-" + fsType
			e.plug(v, e.newBacking(vol, backingSize(fsType)), vol, tccsi.BusSCSI)
			capability := fsCap(fsType, rwo)
			staging := v.stagingPath(b, vol)
			target := v.targetPath(b, "pod-1", vol)
			// Format once, outside the measurement.
			must(b, "NodeStage (mkfs)", v.stage(vol, tccsi.BusSCSI, staging, capability))
			must(b, "NodeUnstage", v.unstage(vol, staging))

			var stage, publish stats.Latencies
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				must(b, "NodeStage", v.stage(vol, tccsi.BusSCSI, staging, capability))
				stage.Since(start)
				staged := time.Now()
				must(b, "NodePublish", v.publish(vol, tccsi.BusSCSI, staging, target, capability, false))
				publish.Since(staged)
				b.StopTimer()
				must(b, "NodeUnpublish", v.unpublish(vol, target))
				must(b, "NodeUnstage", v.unstage(vol, staging))
				b.StartTimer()
			}
			stage.Report(b, "stage")
			publish.Report(b, "publish")
		})
	}
}
