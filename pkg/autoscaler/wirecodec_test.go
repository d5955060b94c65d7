package autoscaler

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// TestWireCodecGolden pins the encoding of a few messages to bytes built by hand from the
// .proto field numbers and types, so the codec cannot drift from the wire format that
// cluster-autoscaler's generated client expects.
func TestWireCodecGolden(t *testing.T) {
	str := func(b []byte, n protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, n, protowire.BytesType), s)
	}
	varint := func(b []byte, n protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, n, protowire.VarintType), v)
	}
	msg := func(b []byte, n protowire.Number, m []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, n, protowire.BytesType), m)
	}

	group := str(nil, 1, "ns/md")
	group = varint(group, 2, 1)
	group = varint(group, 3, 5)
	group = str(group, 4, "dbg")

	entry := str(str(nil, 1, "a"), 2, "b")
	node := str(nil, 1, "kubevirt://vm-1")
	node = str(node, 2, "vm-1")
	node = msg(node, 3, entry)

	minusTwo := varint(nil, 1, uint64(0xFFFFFFFFFFFFFFFE)) // int32 -2, sign-extended
	minusTwo = str(minusTwo, 2, "ns/md")

	errInfo := str(str(nil, 1, "MachineFailed"), 2, "boom")
	errInfo = varint(errInfo, 3, 99)
	instStatus := msg(varint(nil, 1, 2), 2, errInfo)
	instance := msg(str(nil, 1, "kubevirt://vm-1"), 2, instStatus)

	dur := varint(nil, 1, uint64(5*time.Minute))
	opts := protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), 0x3FD0000000000000) // 0.25
	opts = msg(opts, 3, dur)
	opts = varint(opts, 6, 1)

	// Nested messages are encoded in place behind a length that is widened afterwards: one
	// whose length needs two varint bytes (≥ 128) and one that needs three (≥ 16384), beside
	// a short one, so each widening moves what follows.
	long := func(n int) []byte { return str(str(nil, 1, "ns/md"), 4, strings.Repeat("d", n)) }
	longGroups := msg(msg(msg(nil, 1, long(200)), 1, group), 1, long(20000))

	tests := []struct {
		name string
		msg  any
		want []byte
	}{
		{"empty", &protos.RefreshRequest{}, []byte{}},
		{"long nested messages", &protos.NodeGroupsResponse{NodeGroups: []*protos.NodeGroup{
			{Id: "ns/md", Debug: strings.Repeat("d", 200)},
			{Id: "ns/md", MinSize: 1, MaxSize: 5, Debug: "dbg"},
			{Id: "ns/md", Debug: strings.Repeat("d", 20000)}}}, longGroups},
		{"NodeGroupsResponse", &protos.NodeGroupsResponse{NodeGroups: []*protos.NodeGroup{{Id: "ns/md", MinSize: 1, MaxSize: 5, Debug: "dbg"}}},
			msg(nil, 1, group)},
		{"NodeGroupForNodeRequest", &protos.NodeGroupForNodeRequest{Node: &protos.ExternalGrpcNode{
			ProviderID: "kubevirt://vm-1", Name: "vm-1", Labels: map[string]string{"a": "b"}}}, msg(nil, 1, node)},
		{"empty group id", &protos.NodeGroupForNodeResponse{NodeGroup: &protos.NodeGroup{}}, msg(nil, 1, []byte{})},
		{"negative delta", &protos.NodeGroupDecreaseTargetSizeRequest{Delta: -2, Id: "ns/md"}, minusTwo},
		{"instance", &protos.NodeGroupNodesResponse{Instances: []*protos.Instance{{Id: "kubevirt://vm-1", Status: &protos.InstanceStatus{
			InstanceState: protos.InstanceStatus_instanceCreating,
			ErrorInfo:     &protos.InstanceErrorInfo{ErrorCode: "MachineFailed", ErrorMessage: "boom", InstanceErrorClass: 99}}}}},
			msg(nil, 1, instance)},
		{"options", &protos.NodeGroupAutoscalingOptions{ScaleDownUtilizationThreshold: 0.25,
			ScaleDownUnneededTime: &metav1.Duration{Duration: 5 * time.Minute}, ZeroOrMaxNodeScaling: true}, opts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Codec().Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("encoding\n got %x\nwant %x", got, tt.want)
			}
		})
	}
}

// TestWireCodecRoundTrip covers every shape the proto uses, including the Kubernetes types
// that made the stock codec unusable.
func TestWireCodecRoundTrip(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "md-template", Labels: map[string]string{"kubernetes.io/arch": "amd64"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Value: "v", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Capacity: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}},
	}
	anyVal, err := anypb.New(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	start := metav1.NewTime(time.Unix(1700000000, 0))
	msgs := []struct {
		in, out any
	}{
		{&protos.NodeGroupTemplateNodeInfoResponse{NodeInfo: node}, &protos.NodeGroupTemplateNodeInfoResponse{}},
		{&protos.NodeGroupDeleteNodesRequest{Id: "ns/md", Nodes: []*protos.ExternalGrpcNode{
			{ProviderID: "kubevirt://a", Name: "a", Annotations: map[string]string{"x": "y"}},
			{ProviderID: "clusterapi-machine://ns/m", Name: "clusterapi-machine://ns/m"}}}, &protos.NodeGroupDeleteNodesRequest{}},
		{&protos.NodeGroupAutoscalingOptionsRequest{Id: "ns/md", Defaults: caDefaults()}, &protos.NodeGroupAutoscalingOptionsRequest{}},
		{&protos.GetAvailableGPUTypesResponse{GpuTypes: map[string]*anypb.Any{"nvidia": anyVal}}, &protos.GetAvailableGPUTypesResponse{}},
		{&protos.PricingNodePriceRequest{Node: &protos.ExternalGrpcNode{Name: "n"}, StartTime: &start, EndTime: &start}, &protos.PricingNodePriceRequest{}},
		{&protos.PricingPodPriceResponse{Price: 1.5}, &protos.PricingPodPriceResponse{}},
		{&protos.NodeGroupIncreaseSizeRequest{Delta: 3, Id: "ns/md"}, &protos.NodeGroupIncreaseSizeRequest{}},
		{&protos.GPULabelResponse{Label: "gpu"}, &protos.GPULabelResponse{}},
	}
	for _, m := range msgs {
		data, err := Codec().Marshal(m.in)
		if err != nil {
			t.Fatalf("%T: %v", m.in, err)
		}
		if err := Codec().Unmarshal(data, m.out); err != nil {
			t.Fatalf("%T: %v", m.in, err)
		}
		// Re-encoding what was decoded must give the same bytes: nothing was lost or changed.
		// (Structural comparison is not an option: go-cmp's protocmp needs the protobuf
		// reflection that panics on these types.)
		again, err := Codec().Marshal(m.out)
		if err != nil || !bytes.Equal(data, again) {
			t.Errorf("%T does not round-trip: %x vs %x (%v)", m.in, data, again, err)
		}
	}
	// Spot checks that decoding fills the right Go fields.
	tmpl := msgs[0].out.(*protos.NodeGroupTemplateNodeInfoResponse).GetNodeInfo()
	if cpu := tmpl.Status.Capacity[corev1.ResourceCPU]; tmpl.Name != "md-template" || cpu.Value() != 4 || tmpl.Spec.Taints[0].Effect != corev1.TaintEffectNoSchedule {
		t.Errorf("template node decoded wrong: %+v", tmpl)
	}
	del := msgs[1].out.(*protos.NodeGroupDeleteNodesRequest)
	if del.GetId() != "ns/md" || len(del.GetNodes()) != 2 || del.GetNodes()[1].GetProviderID() != "clusterapi-machine://ns/m" ||
		del.GetNodes()[0].GetAnnotations()["x"] != "y" {
		t.Errorf("delete request decoded wrong: %s", show(del.GetNodes()))
	}
	if got := flatten(msgs[2].out.(*protos.NodeGroupAutoscalingOptionsRequest).GetDefaults()); got != flatten(caDefaults()) {
		t.Errorf("defaults decoded wrong: %+v", got)
	}
	if a := msgs[3].out.(*protos.GetAvailableGPUTypesResponse).GetGpuTypes()["nvidia"]; a.GetTypeUrl() != anyVal.GetTypeUrl() {
		t.Errorf("Any decoded wrong: %s", show(a))
	}
	if st := msgs[4].out.(*protos.PricingNodePriceRequest).GetStartTime(); !st.Equal(&start) {
		t.Errorf("time decoded wrong: %v", st)
	}
	if d := msgs[6].out.(*protos.NodeGroupIncreaseSizeRequest); d.GetDelta() != 3 || d.GetId() != "ns/md" {
		t.Errorf("increase decoded wrong: %d %q", d.GetDelta(), d.GetId())
	}
}

func TestWireCodecUnknownFieldsAndReset(t *testing.T) {
	// A newer client's field 9 must be skipped; a reused message must be reset.
	data := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "ns/md")
	data = protowire.AppendVarint(protowire.AppendTag(data, 9, protowire.VarintType), 7)
	out := &protos.NodeGroupIncreaseSizeRequest{Delta: 5, Id: "old"}
	if err := Codec().Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
	if out.GetId() != "ns/md" || out.GetDelta() != 0 {
		t.Fatalf("got id=%q delta=%d", out.GetId(), out.GetDelta())
	}
	if err := Codec().Unmarshal([]byte{0x0a, 0x05, 'a'}, &protos.NodeGroupNodesRequest{}); err == nil {
		t.Fatal("truncated input must fail")
	}
}

func TestWireCodecOtherMessages(t *testing.T) {
	in := &grpc_health_v1.HealthCheckRequest{Service: "x"}
	data, err := Codec().Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := &grpc_health_v1.HealthCheckRequest{}
	if err := Codec().Unmarshal(data, out); err != nil || !cmp.Equal(in, out, protocmp.Transform()) {
		t.Fatalf("health message round trip: %v %v", out, err)
	}
	if _, err := Codec().Marshal(struct{}{}); err == nil {
		t.Fatal("a non-message must be refused")
	}
}
