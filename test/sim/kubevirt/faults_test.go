package kubevirt

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestStalledPointHoldsPhaseUntilRelease(t *testing.T) {
	for _, tc := range []struct {
		point string
		held  kubevirtv1.VirtualMachineInstancePhase
	}{
		{FaultVMIScheduled, kubevirtv1.Scheduling},
		{FaultVMIRunning, kubevirtv1.Scheduled},
	} {
		t.Run(tc.point, func(t *testing.T) {
			s := startSim(t, Options{})
			s.faults.Stall(tc.point)
			s.create(s.newVM("vm-stall", kubevirtv1.RunStrategyAlways))
			s.waitVMIPhase("vm-stall", tc.held)
			s.consistently("VMI held in "+string(tc.held), 10*testPhaseDelay, func() error {
				if p := s.vmi("vm-stall").Status.Phase; p != tc.held {
					return fmt.Errorf("phase moved to %s while %s is stalled", p, tc.point)
				}
				return nil
			})
			s.faults.Release(tc.point)
			s.waitVMIPhase("vm-stall", kubevirtv1.Running)
		})
	}
}

func TestFailNextRunningFailsVMIThenCrashLoopRestarts(t *testing.T) {
	// A short backoff base so the restart KubeVirt does after a start failure is observable.
	s := startSim(t, Options{StartFailureBackoff: 300 * time.Millisecond})
	phases := s.recordPhases()
	s.faults.FailNext(FaultVMIRunning, 1)
	s.create(s.newVM("vm-fail", kubevirtv1.RunStrategyAlways))

	s.eventually("VMI Failed", func() (bool, error) { return phases.has("vm-fail", kubevirtv1.Failed), nil })
	phases.mu.Lock()
	reason := phases.reason["vm-fail"]
	phases.mu.Unlock()
	if reason != reasonInjected {
		t.Errorf("failed VMI reason = %q, want %q", reason, reasonInjected)
	}
	s.eventually("VM in CrashLoopBackOff with a start failure counted", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-fail", vm); err != nil {
			return false, err
		}
		return vm.Status.PrintableStatus == kubevirtv1.VirtualMachineStatusCrashLoopBackOff &&
			vm.Status.StartFailure != nil && vm.Status.StartFailure.ConsecutiveFailCount == 1, nil
	})
	// After the backoff the VM starts a new VMI, which runs and clears the failure count.
	s.eventually("VM running again, failure count cleared", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-fail", vm); err != nil {
			return false, err
		}
		return vm.Status.PrintableStatus == kubevirtv1.VirtualMachineStatusRunning && vm.Status.StartFailure == nil, nil
	})
}

func TestVMStartFaults(t *testing.T) {
	s := startSim(t, Options{})
	conds := s.recordVMConditions()
	s.faults.Stall(FaultVMStart)
	s.create(s.newVM("vm-nostart", kubevirtv1.RunStrategyAlways))
	s.consistently("no VMI while vm/start is stalled", 10*testPhaseDelay, func() error {
		if err := s.get("vm-nostart", &kubevirtv1.VirtualMachineInstance{}); err == nil {
			return fmt.Errorf("VMI created while vm/start is stalled")
		}
		return nil
	})

	s.faults.FailNext(FaultVMStart, 1)
	s.faults.Release(FaultVMStart)
	// The Failure condition lasts until the workqueue's retry, milliseconds: watch for it.
	s.eventually("VM Failure condition from the failed create", func() (bool, error) {
		return conds.any(func(c kubevirtv1.VirtualMachineCondition) bool {
			return c.Type == kubevirtv1.VirtualMachineFailure && c.Reason == reasonFailedCreate && strings.Contains(c.Message, FaultVMStart)
		}), nil
	})
	// The workqueue retries; the next create succeeds and the Failure condition goes.
	s.waitVMIPhase("vm-nostart", kubevirtv1.Running)
	s.eventually("Failure condition cleared", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-nostart", vm); err != nil {
			return false, err
		}
		return vmCondition(vm, kubevirtv1.VirtualMachineFailure) == "", nil
	})
}

func TestUnschedulableVMIWaitsForAFittingNode(t *testing.T) {
	s := startSim(t, Options{})
	vm := s.newVM("vm-gpu", kubevirtv1.RunStrategyAlways)
	vm.Spec.Template.Spec.NodeSelector = map[string]string{"example.com/gpu": "true"}
	s.create(vm)
	s.eventually("VM ErrorUnschedulable", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-gpu", vm); err != nil {
			return false, err
		}
		return vm.Status.PrintableStatus == kubevirtv1.VirtualMachineStatusUnschedulable, nil
	})
	if p := s.vmi("vm-gpu").Status.Phase; p != kubevirtv1.Scheduling {
		t.Errorf("unschedulable VMI in phase %s, want Scheduling", p)
	}

	// Label one infra node; the pending launcher pod gets bound there.
	node := &corev1.Node{}
	if err := s.c.Get(s.ctx, clientKeyNode("infra-b"), node); err != nil {
		t.Fatal(err)
	}
	before := maps.Clone(node.Labels)
	node.Labels["example.com/gpu"] = "true"
	if err := s.c.Update(s.ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n := &corev1.Node{}
		if err := s.c.Get(s.ctx, clientKeyNode("infra-b"), n); err == nil {
			n.Labels = before
			_ = s.c.Update(s.ctx, n)
		}
	})
	vmi := s.waitVMIPhase("vm-gpu", kubevirtv1.Running)
	if vmi.Status.NodeName != "infra-b" {
		t.Errorf("VMI on %s, want the only fitting node infra-b", vmi.Status.NodeName)
	}
}

func TestRerunOnFailureRestartsAFailedVMI(t *testing.T) {
	s := startSim(t, Options{StartFailureBackoff: 200 * time.Millisecond})
	phases := s.recordPhases()
	s.faults.FailNext(FaultVMIRunning, 1)
	s.create(s.newVM("vm-rerun", kubevirtv1.RunStrategyRerunOnFailure))
	s.eventually("VMI Failed", func() (bool, error) { return phases.has("vm-rerun", kubevirtv1.Failed), nil })
	// RerunOnFailure asks for a start after a failure (a Start state change request) and the
	// new VMI runs once the crash-loop backoff is over.
	vmi := s.waitVMIPhase("vm-rerun", kubevirtv1.Running)
	if len(vmi.Status.PhaseTransitionTimestamps) == 0 || vmi.Status.Reason != "" {
		t.Errorf("restarted VMI status %+v", vmi.Status)
	}
	s.eventually("start request consumed", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-rerun", vm); err != nil {
			return false, err
		}
		return len(vm.Status.StateChangeRequests) == 0 && vm.Status.RunStrategy == kubevirtv1.RunStrategyRerunOnFailure, nil
	})
}

func TestManualAndHaltedVMsGetNoVMI(t *testing.T) {
	s := startSim(t, Options{})
	s.create(s.newVM("vm-manual", kubevirtv1.RunStrategyManual))
	s.create(s.newVM("vm-halted", kubevirtv1.RunStrategyHalted))
	s.eventually("both VMs Stopped", func() (bool, error) {
		for _, name := range []string{"vm-manual", "vm-halted"} {
			vm := &kubevirtv1.VirtualMachine{}
			if err := s.get(name, vm); err != nil || vm.Status.PrintableStatus != kubevirtv1.VirtualMachineStatusStopped {
				return false, err
			}
		}
		return true, nil
	})
	s.consistently("no VMI", 10*testPhaseDelay, func() error {
		var vmis kubevirtv1.VirtualMachineInstanceList
		if err := s.c.List(s.ctx, &vmis, client.InNamespace(s.ns)); err != nil {
			return err
		}
		if len(vmis.Items) > 0 {
			return fmt.Errorf("VMI %s created for a Manual/Halted VM", vmis.Items[0].Name)
		}
		return nil
	})
}
