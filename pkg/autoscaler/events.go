package autoscaler

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Event identity.
const (
	EventReasonInvalidAnnotations = "InvalidNodeGroupAnnotations"
	eventComponent                = "tenantcloud-autoscaler-provider"
)

// eventReporter tells the operator, with a log line and a Warning Event on the
// MachineDeployment, why a MachineDeployment that asks to be autoscaled is not a node group.
// It works from informer notifications rather than from NodeGroups, which runs every loop:
// each distinct problem is reported once, when it appears.
type eventReporter struct {
	view  *view
	infra *infra.Client

	mu       sync.Mutex
	reported map[types.UID]string // last problem reported per MachineDeployment
}

func newEventReporter(v *view, ic *infra.Client) *eventReporter {
	return &eventReporter{view: v, infra: ic, reported: map[types.UID]string{}}
}

func (r *eventReporter) register(ctx context.Context, ic *infra.Client) error {
	err := ic.Watch(ctx, &clusterv1.MachineDeployment{}, toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.check(obj) },
		UpdateFunc: func(_, obj any) { r.check(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if md, ok := obj.(*clusterv1.MachineDeployment); ok {
				r.mu.Lock()
				delete(r.reported, md.UID)
				r.mu.Unlock()
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching MachineDeployments: %w", err)
	}
	return nil
}

// check runs on the informer's goroutine with the cache's own object: read-only, and the
// Event is written in the background so a slow API server cannot stall the informer.
func (r *eventReporter) check(obj any) {
	md, ok := obj.(*clusterv1.MachineDeployment)
	if !ok || !r.view.ours(md, md.Spec.ClusterName) || !r.view.groupSelector.Matches(labels.Set(md.Labels)) {
		return
	}
	_, autoscaled, err := ParseBounds(md.Annotations)
	problem := ""
	if autoscaled && err != nil {
		problem = err.Error()
	}
	r.mu.Lock()
	last := r.reported[md.UID]
	r.reported[md.UID] = problem
	r.mu.Unlock()
	if problem == "" || problem == last {
		return
	}
	msg := "not a node group: " + problem
	klog.InfoS("MachineDeployment asks to be autoscaled but is skipped", "machineDeployment", klog.KObj(md), "reason", problem)
	ev := newWarning(md, EventReasonInvalidAnnotations, msg)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.infra.CreateEvent(ctx, ev); err != nil {
			klog.ErrorS(err, "Cannot record Event", "machineDeployment", klog.KObj(md), "reason", ev.Reason)
		}
	}()
}

func newWarning(md *clusterv1.MachineDeployment, reason, msg string) *corev1.Event {
	now := metav1.Now()
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: md.Name + ".", Namespace: md.Namespace},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: clusterv1.GroupVersion.String(), Kind: "MachineDeployment",
			Namespace: md.Namespace, Name: md.Name, UID: md.UID, ResourceVersion: md.ResourceVersion,
		},
		Reason:              reason,
		Message:             msg,
		Type:                corev1.EventTypeWarning,
		Source:              corev1.EventSource{Component: eventComponent},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: "tenantcloud.io/autoscaler-provider",
	}
}
