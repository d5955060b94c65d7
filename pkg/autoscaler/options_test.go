package autoscaler

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

func caDefaults() *protos.NodeGroupAutoscalingOptions {
	return &protos.NodeGroupAutoscalingOptions{
		ScaleDownUtilizationThreshold:    0.5,
		ScaleDownGpuUtilizationThreshold: 0.5,
		ScaleDownUnneededTime:            &metav1.Duration{Duration: 10 * time.Minute},
		ScaleDownUnreadyTime:             &metav1.Duration{Duration: 20 * time.Minute},
		MaxNodeProvisionTime:             &metav1.Duration{Duration: 15 * time.Minute},
		ZeroOrMaxNodeScaling:             true,
		IgnoreDaemonSetsUtilization:      true,
	}
}

// flatOptions makes results comparable (generated messages must not be copied by value).
type flatOptions struct {
	util, gpu                    float64
	unneeded, unready, provision time.Duration
	zeroOrMax, ignoreDS          bool
}

func flatten(o *protos.NodeGroupAutoscalingOptions) flatOptions {
	return flatOptions{o.GetScaleDownUtilizationThreshold(), o.GetScaleDownGpuUtilizationThreshold(),
		o.GetScaleDownUnneededTime().Duration, o.GetScaleDownUnreadyTime().Duration, o.GetMaxNodeProvisionTime().Duration,
		o.GetZeroOrMaxNodeScaling(), o.GetIgnoreDaemonSetsUtilization()}
}

func TestAutoscalingOptions(t *testing.T) {
	def := flatten(caDefaults())
	with := func(mut func(*flatOptions)) flatOptions { f := def; mut(&f); return f }
	p := AnnotationOptionsPrefix
	tests := []struct {
		name     string
		ann      map[string]string
		want     flatOptions
		set      bool
		problems []string
	}{
		{"none", nil, def, false, nil},
		{"unrelated", map[string]string{"foo": "bar", AnnotationMinSize: "1"}, def, false, nil},
		// Each key lands in its own field; the upstream example server crossed two of them.
		{"utilization", map[string]string{p + "scaledownutilizationthreshold": "0.25"},
			with(func(f *flatOptions) { f.util = 0.25 }), true, nil},
		{"gpu utilization", map[string]string{p + "scaledowngpuutilizationthreshold": "0.75"},
			with(func(f *flatOptions) { f.gpu = 0.75 }), true, nil},
		{"unneeded", map[string]string{p + "scaledownunneededtime": "5m"},
			with(func(f *flatOptions) { f.unneeded = 5 * time.Minute }), true, nil},
		{"unready", map[string]string{p + "scaledownunreadytime": "1h"},
			with(func(f *flatOptions) { f.unready = time.Hour }), true, nil},
		{"provision", map[string]string{p + "maxnodeprovisiontime": "30s"},
			with(func(f *flatOptions) { f.provision = 30 * time.Second }), true, nil},
		{"all five", map[string]string{
			p + "scaledownutilizationthreshold": "0.1", p + "scaledowngpuutilizationthreshold": "0.2",
			p + "scaledownunneededtime": "1m", p + "scaledownunreadytime": "2m", p + "maxnodeprovisiontime": "3m"},
			with(func(f *flatOptions) {
				f.util, f.gpu, f.unneeded, f.unready, f.provision = 0.1, 0.2, time.Minute, 2*time.Minute, 3*time.Minute
			}), true, nil},
		{"upper case value", map[string]string{p + "scaledownunneededtime": "5M"},
			with(func(f *flatOptions) { f.unneeded = 5 * time.Minute }), true, nil},
		{"bad duration ignored", map[string]string{p + "scaledownunneededtime": "soon"}, def, false, []string{"not a duration"}},
		{"negative duration", map[string]string{p + "scaledownunreadytime": "-1m"}, def, false, []string{"negative"}},
		{"threshold out of range", map[string]string{p + "scaledownutilizationthreshold": "1.5"}, def, false, []string{"between 0 and 1"}},
		{"threshold not a number", map[string]string{p + "scaledownutilizationthreshold": "half"}, def, false, []string{"not a number"}},
		{"unknown option", map[string]string{p + "scaledowndelay": "1m"}, def, false, []string{"unknown option"}},
		{"good and bad", map[string]string{p + "scaledownunneededtime": "2m", p + "maxnodeprovisiontime": "x"},
			with(func(f *flatOptions) { f.unneeded = 2 * time.Minute }), true, []string{"maxnodeprovisiontime"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, set, problems := AutoscalingOptions(tt.ann, caDefaults())
			if flatten(got) != tt.want || set != tt.set {
				t.Fatalf("got %+v set=%v; want %+v set=%v", flatten(got), set, tt.want, tt.set)
			}
			if len(problems) != len(tt.problems) {
				t.Fatalf("problems %v, want %d", problems, len(tt.problems))
			}
			for i, w := range tt.problems {
				if !strings.Contains(problems[i].Error(), w) {
					t.Errorf("problem %q does not mention %q", problems[i], w)
				}
			}
		})
	}
}

func TestAutoscalingOptionsNilDefaults(t *testing.T) {
	got, set, _ := AutoscalingOptions(map[string]string{AnnotationOptionsPrefix + "scaledownunneededtime": "1m"}, nil)
	if !set || got.GetScaleDownUnreadyTime() == nil || got.GetMaxNodeProvisionTime() == nil {
		t.Fatalf("durations must never be nil: %s", show(got))
	}
}
