package kubevirt

import (
	"maps"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

const (
	// launcherAppValue is the kubevirt.io label value of virt-launcher pods.
	launcherAppValue = "virt-launcher"
	// computeContainer is the launcher container that runs the domain.
	computeContainer = "compute"
	launcherImage    = "quay.io/kubevirt/virt-launcher:v1.8.1"
	// unpausedGate is the readiness gate virt-controller puts on launcher pods.
	unpausedGate corev1.PodConditionType = kubevirtv1.VirtualMachineUnpaused
	// domainAnnotation names the libvirt domain the pod runs.
	domainAnnotation = "kubevirt.io/domain"
)

// launcherLabels are virt-controller's podLabels: the VMI's labels (so anything selecting a
// VM's pod by the labels CAPK put on the VMI template works) plus KubeVirt's own.
func launcherLabels(vmi *kubevirtv1.VirtualMachineInstance) map[string]string {
	l := maps.Clone(vmi.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[kubevirtv1.AppLabel] = launcherAppValue
	l[kubevirtv1.CreatedByLabel] = string(vmi.UID)
	l[kubevirtv1.DeprecatedVirtualMachineNameLabel] = hostname(vmi)
	l[kubevirtv1.VirtualMachineInstanceIDLabel] = instanceID(vmi.Name)
	return l
}

// hostname is KubeVirt's SanitizeHostname: the first DNS label of the name, or spec.hostname.
func hostname(vmi *kubevirtv1.VirtualMachineInstance) string {
	if vmi.Spec.Hostname != "" {
		return vmi.Spec.Hostname
	}
	h, _, _ := strings.Cut(vmi.Name, ".")
	if len(h) > 63 {
		h = h[:63]
	}
	return h
}

// instanceID is the vmi.kubevirt.io/id label value: the name when it fits a label value.
// KubeVirt hashes longer names; the simulator truncates, which is enough for uniqueness here.
func instanceID(name string) string {
	if len(name) > 63 {
		return name[:63]
	}
	return name
}

// launcherPod builds the virt-launcher pod virt-controller creates for a VMI. It is created
// unbound; the simulator's scheduler binds it through the pods/binding subresource.
func launcherPod(vmi *kubevirtv1.VirtualMachineInstance) *corev1.Pod {
	selector := maps.Clone(vmi.Spec.NodeSelector)
	if selector == nil {
		selector = map[string]string{}
	}
	selector[LabelSchedulable] = "true"
	grace := int64(30)
	if vmi.Spec.TerminationGracePeriodSeconds != nil {
		grace = *vmi.Spec.TerminationGracePeriodSeconds
	}
	// KubeVirt gives the launcher 15s beyond the guest's grace period to clean up.
	grace += 15
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    "virt-launcher-" + vmi.Name + "-",
			Namespace:       vmi.Namespace,
			Labels:          launcherLabels(vmi),
			Annotations:     map[string]string{domainAnnotation: vmi.Name},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vmi, kubevirtv1.VirtualMachineInstanceGroupVersionKind)},
		},
		Spec: corev1.PodSpec{
			Hostname:                      hostname(vmi),
			Subdomain:                     vmi.Spec.Subdomain,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			NodeSelector:                  selector,
			Tolerations:                   vmi.Spec.Tolerations,
			Affinity:                      vmi.Spec.Affinity,
			ReadinessGates:                []corev1.PodReadinessGate{{ConditionType: unpausedGate}},
			Containers: []corev1.Container{{
				Name:      computeContainer,
				Image:     launcherImage,
				Command:   []string{"/usr/bin/virt-launcher-monitor"},
				Resources: corev1.ResourceRequirements{Requests: vmi.Spec.Domain.Resources.Requests, Limits: vmi.Spec.Domain.Resources.Limits},
			}},
		},
	}
}

func setPodCondition(pod *corev1.Pod, t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string, now metav1.Time) {
	for i := range pod.Status.Conditions {
		c := &pod.Status.Conditions[i]
		if c.Type == t {
			if c.Status != s {
				c.LastTransitionTime = now
			}
			c.Status, c.Reason, c.Message = s, reason, msg
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg, LastTransitionTime: now})
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// markPodStarted is what the kubelet reports once the launcher container runs: phase Running,
// the pod network addresses, compute started but not yet ready (the domain is still booting).
func markPodStarted(pod *corev1.Pod, hostIP string, addrs []netip.Addr, now metav1.Time) {
	pod.Status.Phase = corev1.PodRunning
	pod.Status.HostIP = hostIP
	pod.Status.HostIPs = nil
	if hostIP != "" {
		pod.Status.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	pod.Status.PodIPs = nil
	for _, a := range addrs {
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: a.String()})
	}
	if len(addrs) > 0 {
		pod.Status.PodIP = addrs[0].String()
	}
	if pod.Status.StartTime == nil {
		pod.Status.StartTime = &now
	}
	setPodCondition(pod, corev1.PodInitialized, corev1.ConditionTrue, "", "", now)
	setPodCondition(pod, corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady", "containers with unready status: [compute]", now)
	setPodCondition(pod, corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", "containers with unready status: [compute]", now)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{computeStatus(pod, false, now)}
}

// markPodReady is the launcher's readiness probe passing once the domain runs, plus
// virt-controller setting the unpaused readiness gate.
func markPodReady(pod *corev1.Pod, now metav1.Time) {
	setPodCondition(pod, unpausedGate, corev1.ConditionTrue, "", "", now)
	setPodCondition(pod, corev1.ContainersReady, corev1.ConditionTrue, "", "", now)
	setPodCondition(pod, corev1.PodReady, corev1.ConditionTrue, "", "", now)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{computeStatus(pod, true, now)}
}

// markPodFinished is the kubelet reporting the launcher exited: Succeeded after a clean guest
// shutdown, Failed otherwise.
func markPodFinished(pod *corev1.Pod, succeeded bool, now metav1.Time) {
	pod.Status.Phase = corev1.PodFailed
	code, reason := int32(1), "Error"
	if succeeded {
		pod.Status.Phase = corev1.PodSucceeded
		code, reason = 0, "Completed"
	}
	setPodCondition(pod, corev1.ContainersReady, corev1.ConditionFalse, "PodCompleted", "", now)
	setPodCondition(pod, corev1.PodReady, corev1.ConditionFalse, "PodCompleted", "", now)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: computeContainer, Image: launcherImage, ImageID: launcherImage,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, FinishedAt: now}},
	}}
}

func computeStatus(pod *corev1.Pod, ready bool, now metav1.Time) corev1.ContainerStatus {
	started := now
	if pod.Status.StartTime != nil {
		started = *pod.Status.StartTime
	}
	return corev1.ContainerStatus{
		Name: computeContainer, Image: launcherImage, ImageID: launcherImage, Ready: ready, Started: ptrTo(true),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
	}
}

func podFinal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// podGoingDown is KubeVirt's IsPodDownOrGoingDown: the launcher is gone or going.
func podGoingDown(pod *corev1.Pod) bool {
	return pod == nil || podFinal(pod) || pod.DeletionTimestamp != nil
}

func ptrTo[T any](v T) *T { return &v }
