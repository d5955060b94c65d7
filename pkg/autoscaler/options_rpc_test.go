package autoscaler_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
)

// TestGetOptions: annotations land in their own fields over the client's defaults; a group
// without any (or with only unusable ones) gets the defaults back, not Unimplemented, which
// cluster-autoscaler would ask again for every loop.
func TestGetOptions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := autoscaler.AnnotationOptionsPrefix
	ann := bounds("0", "5")
	ann[p+"scaledownutilizationthreshold"] = "0.3"
	ann[p+"scaledowngpuutilizationthreshold"] = "0.6"
	ann[p+"scaledownunneededtime"] = "7m"
	ann[p+"scaledownunreadytime"] = "11m"
	ann[p+"maxnodeprovisiontime"] = "13m"
	f.md("tuned", mdOpts{annotations: ann})
	bad := bounds("0", "5")
	bad[p+"scaledownunneededtime"] = "soon"
	f.md("bad", mdOpts{annotations: bad})
	f.md("plain", mdOpts{annotations: bounds("0", "5")})
	cl := f.start()

	defaults := &protos.NodeGroupAutoscalingOptions{
		ScaleDownUtilizationThreshold: 0.5, ScaleDownGpuUtilizationThreshold: 0.5,
		ScaleDownUnneededTime: &metav1.Duration{Duration: 10 * time.Minute},
		ScaleDownUnreadyTime:  &metav1.Duration{Duration: 20 * time.Minute},
		MaxNodeProvisionTime:  &metav1.Duration{Duration: 15 * time.Minute},
		ZeroOrMaxNodeScaling:  true, IgnoreDaemonSetsUtilization: true,
	}
	resp, err := cl.NodeGroupGetOptions(f.ctx, &protos.NodeGroupAutoscalingOptionsRequest{Id: f.group("tuned"), Defaults: defaults})
	if err != nil {
		t.Fatal(err)
	}
	o := resp.GetNodeGroupAutoscalingOptions()
	if o.GetScaleDownUtilizationThreshold() != 0.3 || o.GetScaleDownGpuUtilizationThreshold() != 0.6 ||
		o.GetScaleDownUnneededTime().Duration != 7*time.Minute || o.GetScaleDownUnreadyTime().Duration != 11*time.Minute ||
		o.GetMaxNodeProvisionTime().Duration != 13*time.Minute || !o.GetZeroOrMaxNodeScaling() || !o.GetIgnoreDaemonSetsUtilization() {
		t.Fatalf("options %s", show(o))
	}
	for _, g := range []string{"bad", "plain"} {
		resp, err := cl.NodeGroupGetOptions(f.ctx, &protos.NodeGroupAutoscalingOptionsRequest{Id: f.group(g), Defaults: defaults})
		if err != nil {
			t.Fatalf("%s: %v", g, err)
		}
		o := resp.GetNodeGroupAutoscalingOptions()
		if o.GetScaleDownUtilizationThreshold() != 0.5 || o.GetScaleDownGpuUtilizationThreshold() != 0.5 ||
			o.GetScaleDownUnneededTime().Duration != 10*time.Minute || o.GetScaleDownUnreadyTime().Duration != 20*time.Minute ||
			o.GetMaxNodeProvisionTime().Duration != 15*time.Minute || !o.GetZeroOrMaxNodeScaling() || !o.GetIgnoreDaemonSetsUtilization() {
			t.Fatalf("%s: options %s, want the defaults", g, show(o))
		}
	}
	_, err = cl.NodeGroupGetOptions(f.ctx, &protos.NodeGroupAutoscalingOptionsRequest{Id: f.group("missing"), Defaults: defaults})
	wantCode(t, err, codes.NotFound, "node group not found")
}

// TestOptionalRPCs: what the provider does not offer answers Unimplemented; GPULabel answers
// with no label (cluster-autoscaler caches only a successful answer); Refresh and Cleanup
// succeed.
func TestOptionalRPCs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cl := f.start()
	_, err := cl.PricingNodePrice(f.ctx, &protos.PricingNodePriceRequest{Node: &protos.ExternalGrpcNode{Name: "n"}})
	wantCode(t, err, codes.Unimplemented, "pricing")
	_, err = cl.PricingPodPrice(f.ctx, &protos.PricingPodPriceRequest{})
	wantCode(t, err, codes.Unimplemented, "pricing")
	if resp, err := cl.GPULabel(f.ctx, &protos.GPULabelRequest{}); err != nil || resp.GetLabel() != "" {
		t.Fatalf("GPULabel %q, %v; want no label and no error", resp.GetLabel(), err)
	}
	_, err = cl.GetAvailableGPUTypes(f.ctx, &protos.GetAvailableGPUTypesRequest{})
	wantCode(t, err, codes.Unimplemented, "GPU")
	if _, err := cl.Refresh(f.ctx, &protos.RefreshRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Cleanup(f.ctx, &protos.CleanupRequest{}); err != nil {
		t.Fatal(err)
	}
}
