package install

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// waitReady waits until every Deployment of the management release and the tenant release's
// DaemonSet have all their pods Ready, then checks each pod: Running, on the management node
// (management side), every container started from the image the values name and running
// exactly the digest bin/images lists for it.
func (r *Release) waitReady(ctx context.Context) error {
	err := harness.WaitFor(ctx, r.opts.Timeout, func(ctx context.Context) (bool, error) {
		mgmt, mOK, err := r.podsReady(ctx, r.env.Management, r.Namespace, true)
		if err != nil {
			return false, err
		}
		tenant, tOK, err := r.podsReady(ctx, r.env.Tenant, TenantNamespace, false)
		if err != nil {
			return false, err
		}
		r.ManagementPods, r.TenantPods = mgmt, tenant
		return mOK && tOK, nil
	})
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return fmt.Errorf("waiting for the charts' pods: %w\n%s", err, r.Describe(dctx))
	}
	for _, p := range append(append([]corev1.Pod{}, r.ManagementPods...), r.TenantPods...) {
		if err := r.checkPod(p); err != nil {
			return err
		}
	}
	return nil
}

// podsReady lists the release's pods in ns of c and says whether its workloads are complete
// (every Deployment's, or the DaemonSet's, desired pods Ready) and each listed pod is Ready.
func (r *Release) podsReady(ctx context.Context, c *harness.Cluster, ns string, deployments bool) ([]corev1.Pod, bool, error) {
	want := int32(0)
	if deployments {
		list := &appsv1.DeploymentList{}
		if err := c.Client.List(ctx, list, client.InNamespace(ns), r.podSelector()); err != nil {
			return nil, false, err
		}
		if len(list.Items) == 0 {
			return nil, false, fmt.Errorf("%s: no Deployment of release %s in %s", c.Name, r.Name, ns)
		}
		for _, d := range list.Items {
			if d.Status.ReadyReplicas != *d.Spec.Replicas || d.Status.UpdatedReplicas != *d.Spec.Replicas || d.Status.Replicas != *d.Spec.Replicas {
				return nil, false, nil
			}
			want += *d.Spec.Replicas
		}
	} else {
		list := &appsv1.DaemonSetList{}
		if err := c.Client.List(ctx, list, client.InNamespace(ns), r.podSelector()); err != nil {
			return nil, false, err
		}
		if len(list.Items) == 0 {
			return nil, false, fmt.Errorf("%s: no DaemonSet of release %s in %s", c.Name, r.Name, ns)
		}
		for _, d := range list.Items {
			if d.Status.DesiredNumberScheduled == 0 || d.Status.NumberReady != d.Status.DesiredNumberScheduled {
				return nil, false, nil
			}
			want += d.Status.DesiredNumberScheduled
		}
	}
	pods := &corev1.PodList{}
	if err := c.Client.List(ctx, pods, client.InNamespace(ns), r.podSelector()); err != nil {
		return nil, false, err
	}
	if int32(len(pods.Items)) != want {
		return pods.Items, false, nil // a replaced pod is still going
	}
	for _, p := range pods.Items {
		if !podReady(&p) {
			return pods.Items, false, nil
		}
	}
	return pods.Items, true, nil
}

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkPod verifies where a Ready pod runs and what.
func (r *Release) checkPod(p corev1.Pod) error {
	if p.Namespace == r.Namespace && p.Spec.NodeName != r.opts.ManagementNode {
		return fmt.Errorf("pod %s runs on %q, not on the management node %s", p.Name, p.Spec.NodeName, r.opts.ManagementNode)
	}
	byRef := map[string]string{}
	for name, ref := range r.opts.Images.Refs {
		byRef[ref] = name
	}
	images := map[string]string{}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		images[c.Name] = c.Image
	}
	if len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
		return fmt.Errorf("pod %s: %d container statuses for %d containers", p.Name, len(p.Status.ContainerStatuses), len(p.Spec.Containers))
	}
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		name, ok := byRef[images[s.Name]]
		if !ok {
			return fmt.Errorf("pod %s container %s: image %q is not one make images built and Install pushed", p.Name, s.Name, images[s.Name])
		}
		if want := r.opts.Images.Digests[name]; !strings.HasSuffix(s.ImageID, "@"+want) {
			return fmt.Errorf("pod %s container %s: imageID %q, want the digest %s of %s in bin/images/images.txt", p.Name, s.Name, s.ImageID, want, name)
		}
	}
	return nil
}

// describePods is a line per pod: where it runs and each container's state, for errors.
func describePods(pods []corev1.Pod) string {
	var lines []string
	for _, p := range pods {
		var cs []string
		for _, s := range p.Status.ContainerStatuses {
			state := "running"
			switch {
			case s.State.Waiting != nil:
				state = "waiting " + s.State.Waiting.Reason + ": " + s.State.Waiting.Message
			case s.State.Terminated != nil:
				state = fmt.Sprintf("terminated %s (exit %d): %s", s.State.Terminated.Reason, s.State.Terminated.ExitCode, s.State.Terminated.Message)
			}
			cs = append(cs, fmt.Sprintf("%s ready=%v restarts=%d %s", s.Name, s.Ready, s.RestartCount, state))
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
				cs = append(cs, "unscheduled "+c.Reason+": "+c.Message)
			}
		}
		lines = append(lines, fmt.Sprintf("%s/%s on %q %s: %s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, strings.Join(cs, "; ")))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Describe is what `kubectl get pods -o wide` and `kubectl get events` would show of both
// releases now: a line per pod (node, phase, each container's readiness, restarts and state)
// and the Events of the infra namespace and the tenant's kube-system, for failure messages.
// Container logs are on the nodes (node.Node.ContainerLog): the apiserver cannot reach a
// kubelet here.
func (r *Release) Describe(ctx context.Context) string {
	var b strings.Builder
	for _, side := range []struct {
		c  *harness.Cluster
		ns string
	}{{r.env.Management, r.Namespace}, {r.env.Tenant, TenantNamespace}} {
		pods := &corev1.PodList{}
		if err := side.c.Client.List(ctx, pods, client.InNamespace(side.ns), r.podSelector()); err != nil {
			fmt.Fprintf(&b, "%s pods in %s: %v\n", side.c.Name, side.ns, err)
		} else {
			fmt.Fprintf(&b, "%s pods in %s:\n%s\n", side.c.Name, side.ns, describePods(pods.Items))
		}
		fmt.Fprintf(&b, "%s events in %s:\n%s\n", side.c.Name, side.ns, events(ctx, side.c, side.ns))
	}
	return b.String()
}

// events lists the Events of ns in c, oldest first, a line each.
func events(ctx context.Context, c *harness.Cluster, ns string) string {
	list := &corev1.EventList{}
	if err := c.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	sort.SliceStable(list.Items, func(i, j int) bool {
		return list.Items[i].LastTimestamp.Before(&list.Items[j].LastTimestamp)
	})
	var lines []string
	for _, e := range list.Items {
		lines = append(lines, fmt.Sprintf("%s %s %s/%s: %s (x%d) %s", e.LastTimestamp.Format("15:04:05"), e.Type,
			e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, max(e.Count, 1), e.Message))
	}
	return strings.Join(lines, "\n")
}
