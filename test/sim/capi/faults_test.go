package capi

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestNodeJoinStallLeavesMachineProvisioned(t *testing.T) {
	s := startSim(t, Options{})
	s.faults.Stall(FaultMachineNodeJoin)
	s.create(s.newMD("md-a", 1))
	var m clusterv1.Machine
	s.eventually("machine Provisioned", func() (bool, error) {
		ms := s.machines("md-a")
		if len(ms) != 1 {
			return false, nil
		}
		m = ms[0]
		return m.Status.Phase == string(clusterv1.MachinePhaseProvisioned), nil
	})
	s.consistently("no node while the join is stalled", 10*testPhaseDelay, func() error {
		got := &clusterv1.Machine{}
		if err := s.c.Get(s.ctx, client.ObjectKeyFromObject(&m), got); err != nil {
			return err
		}
		if got.Status.Phase != string(clusterv1.MachinePhaseProvisioned) || got.Status.NodeRef.Name != "" {
			return fmt.Errorf("machine phase %s nodeRef %q", got.Status.Phase, got.Status.NodeRef.Name)
		}
		if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: m.Name}, &corev1.Node{}); err == nil {
			return fmt.Errorf("tenant node %s registered while stalled", m.Name)
		}
		return nil
	})
	if m.Spec.ProviderID == "" {
		t.Errorf("Provisioned machine without providerID")
	}
	s.faults.Release(FaultMachineNodeJoin)
	s.waitRunning("md-a", 1)
}

func TestProvisionFailureIsReportedOnMachine(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacyFailedPhase=%v", legacy), func(t *testing.T) {
			s := startSim(t, Options{LegacyFailedPhase: legacy})
			s.faults.FailNext(FaultMachineProvision, 1)
			s.create(s.newMD("md-a", 1))
			var m clusterv1.Machine
			s.eventually("machine failure reported", func() (bool, error) {
				ms := s.machines("md-a")
				if len(ms) != 1 {
					return false, nil
				}
				m = ms[0]
				return failed(&m), nil
			})
			d := m.Status.Deprecated.V1Beta1
			if d.FailureReason == nil || *d.FailureReason != "CreateError" || d.FailureMessage == nil || !strings.Contains(*d.FailureMessage, FaultMachineProvision) {
				t.Errorf("failure = %v / %v", d.FailureReason, d.FailureMessage)
			}
			// Cluster API v1.14 no longer sets phase Failed; the legacy option does.
			wantPhase := string(clusterv1.MachinePhaseProvisioning)
			if legacy {
				wantPhase = string(clusterv1.MachinePhaseFailed)
			}
			s.eventually("phase "+wantPhase, func() (bool, error) {
				got := &clusterv1.Machine{}
				err := s.c.Get(s.ctx, client.ObjectKeyFromObject(&m), got)
				return err == nil && got.Status.Phase == wantPhase, err
			})
			if c := meta.FindStatusCondition(m.Status.Conditions, clusterv1.MachineInfrastructureReadyCondition); c == nil || c.Status != metav1.ConditionFalse || c.Message == "" {
				t.Errorf("InfrastructureReady = %+v, want False with the failure", c)
			}
			s.consistently("no VM for a failed machine", 10*testPhaseDelay, func() error {
				if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: m.Name}, &kubevirtv1.VirtualMachine{}); err == nil {
					return fmt.Errorf("VM created for failed machine %s", m.Name)
				}
				return nil
			})
		})
	}
}

func TestPausedMachineDeploymentIsLeftAlone(t *testing.T) {
	s := startSim(t, Options{})
	s.create(s.newMD("md-a", 1))
	s.waitRunning("md-a", 1)

	// spec.paused only pauses rollouts: Cluster API still scales.
	s.mutateMD("md-a", func(md *clusterv1.MachineDeployment) {
		md.Spec.Paused = ptrTo(true)
		md.Spec.Replicas = ptrTo(int32(2))
	})
	s.waitRunning("md-a", 2)

	// The paused annotation stops reconciliation altogether.
	s.mutateMD("md-a", func(md *clusterv1.MachineDeployment) {
		md.Spec.Paused = nil
		if md.Annotations == nil {
			md.Annotations = map[string]string{}
		}
		md.Annotations[clusterv1.PausedAnnotation] = ""
	})
	s.eventually("Paused condition", func() (bool, error) {
		md := &clusterv1.MachineDeployment{}
		err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: "md-a"}, md)
		return err == nil && meta.IsStatusConditionTrue(md.Status.Conditions, clusterv1.PausedCondition), err
	})
	s.setReplicas("md-a", 3)
	s.consistently("paused deployment not scaled", 15*testPhaseDelay, func() error {
		var sets clusterv1.MachineSetList
		if err := s.c.List(s.ctx, &sets, client.InNamespace(s.ns)); err != nil {
			return err
		}
		if len(sets.Items) != 1 || deref(sets.Items[0].Spec.Replicas) != 2 || len(s.machines("md-a")) != 2 {
			return fmt.Errorf("paused deployment changed: %d sets, %d machines", len(sets.Items), len(s.machines("md-a")))
		}
		return nil
	})
	s.mutateMD("md-a", func(md *clusterv1.MachineDeployment) { delete(md.Annotations, clusterv1.PausedAnnotation) })
	s.waitRunning("md-a", 3)
}

func TestExternalCloudProviderTaintsNewNodes(t *testing.T) {
	s := startSim(t, Options{ExternalCloudProvider: true})
	s.create(s.newMD("md-a", 1))
	m := s.waitRunning("md-a", 1)[0]
	node := &corev1.Node{}
	if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: m.Name}, node); err != nil {
		t.Fatal(err)
	}
	want := corev1.Taint{Key: TaintCloudUninitialized, Value: "true", Effect: corev1.TaintEffectNoSchedule}
	if len(node.Spec.Taints) != 1 || node.Spec.Taints[0].Key != want.Key || node.Spec.Taints[0].Value != want.Value || node.Spec.Taints[0].Effect != want.Effect {
		t.Errorf("taints = %v, want only %v (the cloud controller manager lifts it)", node.Spec.Taints, want)
	}
}

func TestMachineDeletionWaitsForVolumeDetach(t *testing.T) {
	s := startSim(t, Options{})
	s.create(s.newMD("md-a", 1))
	m := s.waitRunning("md-a", 1)[0]
	pv := "pv-data"
	va := &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "va-" + m.Name},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: "csi.example.com", NodeName: m.Name,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}},
	}
	if err := s.tenant.Create(s.ctx, va); err != nil {
		t.Fatal(err)
	}
	s.scaleTo("md-a", 0)
	s.eventually("machine Deleting, waiting for the volume", func() (bool, error) {
		got := &clusterv1.Machine{}
		if err := s.c.Get(s.ctx, client.ObjectKeyFromObject(&m), got); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, clusterv1.MachineDeletingCondition)
		return got.Status.Phase == string(clusterv1.MachinePhaseDeleting) && c != nil && c.Reason == deletingWaitingForVolumeDetach, nil
	})
	node := &corev1.Node{}
	if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: m.Name}, node); err != nil || !node.Spec.Unschedulable {
		t.Errorf("node %s not cordoned before deletion (err %v)", m.Name, err)
	}
	s.consistently("VM kept while a volume is attached", 10*testPhaseDelay, func() error {
		return s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: m.Name}, &kubevirtv1.VirtualMachine{})
	})
	if err := s.tenant.Delete(s.ctx, va); err != nil {
		t.Fatal(err)
	}
	s.waitGone(client.ObjectKeyFromObject(&m), &clusterv1.Machine{}, s.c)
	s.waitGone(client.ObjectKey{Namespace: s.ns, Name: m.Name}, &kubevirtv1.VirtualMachine{}, s.c)
	s.waitGone(client.ObjectKey{Name: m.Name}, &corev1.Node{}, s.tenant)
}

// TestTemplateCapacity upgrades the KubevirtMachineTemplate CRD of this package's apiserver
// the way CAPK's scale-from-zero change does (status.capacity, status subresource): the pinned
// CAPK v0.1.10 CRD has no status at all, and the apiserver would prune the field.
func TestTemplateCapacity(t *testing.T) {
	s := startSim(t, Options{})
	if err := env.Management.AddKubevirtMachineTemplateCapacity(s.ctx); err != nil {
		t.Fatal(err)
	}
	s.eventually("template status.capacity", func() (bool, error) {
		tmpl := &unstructured.Unstructured{}
		tmpl.SetAPIVersion(KubevirtMachineTemplateAPIVersion)
		tmpl.SetKind(kindKubevirtMT)
		if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: templateName}, tmpl); err != nil {
			return false, err
		}
		capacity, _, _ := unstructured.NestedStringMap(tmpl.Object, "status", "capacity")
		cpu, mem := resource.MustParse("0"), resource.MustParse("0")
		if v, ok := capacity["cpu"]; ok {
			cpu = resource.MustParse(v)
		}
		if v, ok := capacity["memory"]; ok {
			mem = resource.MustParse(v)
		}
		return cpu.Cmp(resource.MustParse("2")) == 0 && mem.Cmp(resource.MustParse(templateMemory)) == 0, nil
	})
}
