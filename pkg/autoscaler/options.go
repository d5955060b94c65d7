package autoscaler

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// Option names after AnnotationOptionsPrefix: cluster-autoscaler's config keys, the same ones
// its clusterapi provider reads.
const (
	OptionScaleDownUtilizationThreshold    = "scaledownutilizationthreshold"
	OptionScaleDownGPUUtilizationThreshold = "scaledowngpuutilizationthreshold"
	OptionScaleDownUnneededTime            = "scaledownunneededtime"
	OptionScaleDownUnreadyTime             = "scaledownunreadytime"
	OptionMaxNodeProvisionTime             = "maxnodeprovisiontime"
)

// AutoscalingOptions overlays a group's autoscaling-options-* annotations on the defaults the
// client sent. set is false when no annotation yields a usable value: the result is then the
// defaults as sent. Values that do not parse are reported in problems and ignored, like the
// clusterapi provider does.
//
// Every duration of the result is non-nil, because cluster-autoscaler's client dereferences
// them unconditionally.
func AutoscalingOptions(annotations map[string]string, defaults *protos.NodeGroupAutoscalingOptions) (
	opts *protos.NodeGroupAutoscalingOptions, set bool, problems []error) {
	opts = &protos.NodeGroupAutoscalingOptions{
		ScaleDownUtilizationThreshold:    defaults.GetScaleDownUtilizationThreshold(),
		ScaleDownGpuUtilizationThreshold: defaults.GetScaleDownGpuUtilizationThreshold(),
		ScaleDownUnneededTime:            durationOrZero(defaults.GetScaleDownUnneededTime()),
		ScaleDownUnreadyTime:             durationOrZero(defaults.GetScaleDownUnreadyTime()),
		MaxNodeProvisionTime:             durationOrZero(defaults.GetMaxNodeProvisionTime()),
		ZeroOrMaxNodeScaling:             defaults.GetZeroOrMaxNodeScaling(),
		IgnoreDaemonSetsUtilization:      defaults.GetIgnoreDaemonSetsUtilization(),
	}
	// Sorted so that problems come out in a stable order.
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationOptionsPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		name := strings.TrimPrefix(key, AnnotationOptionsPrefix)
		raw := strings.ToLower(strings.TrimSpace(annotations[key]))
		var err error
		switch name {
		case OptionScaleDownUtilizationThreshold:
			err = setThreshold(&opts.ScaleDownUtilizationThreshold, raw)
		case OptionScaleDownGPUUtilizationThreshold:
			err = setThreshold(&opts.ScaleDownGpuUtilizationThreshold, raw)
		case OptionScaleDownUnneededTime:
			err = setDuration(&opts.ScaleDownUnneededTime, raw)
		case OptionScaleDownUnreadyTime:
			err = setDuration(&opts.ScaleDownUnreadyTime, raw)
		case OptionMaxNodeProvisionTime:
			err = setDuration(&opts.MaxNodeProvisionTime, raw)
		default:
			err = fmt.Errorf("unknown option")
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("annotation %s=%q: %w", key, annotations[key], err))
			continue
		}
		set = true
	}
	return opts, set, problems
}

func durationOrZero(d *metav1.Duration) *metav1.Duration {
	if d == nil {
		return &metav1.Duration{}
	}
	return &metav1.Duration{Duration: d.Duration}
}

func setThreshold(dst *float64, raw string) error {
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil {
		return fmt.Errorf("not a number")
	}
	if f < 0 || f > 1 {
		return fmt.Errorf("a utilization threshold must be between 0 and 1")
	}
	*dst = f
	return nil
}

func setDuration(dst **metav1.Duration, raw string) error {
	d, err := time.ParseDuration(raw)
	if err != nil {
		return fmt.Errorf("not a duration such as 10m")
	}
	if d < 0 {
		return fmt.Errorf("a duration must not be negative")
	}
	*dst = &metav1.Duration{Duration: d}
	return nil
}
