package hotplug

import (
	"context"
	"fmt"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestFailedStatusWriteBacksOff: while the apiserver refuses the VMI status write, the
// controller retries with a growing delay, as virt-handler's rate-limited queue does, instead of
// retrying every phase delay (session 2 saw ≈17 failed writes a second through a 60 s outage).
// The refusal is real: a ValidatingAdmissionPolicy on this test's namespace that denies any
// change to a VMI's status, which only the controller writes.
func TestFailedStatusWriteBacksOff(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 8*mib, true)
	// Held mid-walk, where each step waits a phase delay (the first one is due at once), until
	// the policy is in force.
	held := FaultPoint(kubevirtv1.HotplugVolumeAttachedToNode)
	s.faults.Stall(held)
	hotplug(t, ns, "vm-1", "data", "pvc-data", "refused", kubevirtv1.DiskBusVirtio)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeBound)
	denyStatusChanges(t, ns)
	since := time.Now()
	s.faults.Release(held)

	// The next step's write is refused; wait for the ninth refusal. The controller-runtime
	// limiter spaces retries 5 ms × 2^n apart, so the gap before the ninth is at least 640 ms; a
	// controller that restarted its backoff after every phase delay would show gaps near
	// phaseDelay (100 ms).
	const attempts = 9
	var refused []harness.AuditEvent
	harness.Eventually(t, ctxT(t), 60*time.Second, fmt.Sprintf("%d refused status writes", attempts), func(context.Context) (bool, error) {
		var err error
		refused, err = env.Management.AuditEvents(since, func(e harness.AuditEvent) bool {
			return e.Verb == "update" && e.ObjectRef != nil && e.ObjectRef.Resource == "virtualmachineinstances" &&
				e.ObjectRef.Namespace == ns && e.ObjectRef.Name == "vm-1" &&
				e.ResponseStatus != nil && e.ResponseStatus.Code >= 400
		})
		return len(refused) >= attempts, err
	})
	first := refused[1].StageTimestamp.Sub(refused[0].StageTimestamp)
	last := refused[attempts-1].StageTimestamp.Sub(refused[attempts-2].StageTimestamp)
	t.Logf("gap between the first two refused writes %s, between the last two of %d %s", first, attempts, last)
	if last < 3*phaseDelay {
		t.Fatalf("refused status writes %s apart after %d attempts: retries do not back off", last, attempts)
	}
	if st := volumeStatus(getVMI(t, ns, "vm-1"), "data"); st == nil || st.Phase != kubevirtv1.VolumeBound {
		t.Fatalf("the volume moved on despite the policy: %+v", st)
	}
}

// denyStatusChanges installs a ValidatingAdmissionPolicy and binding that refuse any update
// of a VMI in ns that changes its status; they are removed when the test ends.
func denyStatusChanges(t *testing.T, ns string) {
	t.Helper()
	ctx := ctxT(t)
	name := "deny-vmi-status-" + ns
	fail := admissionv1.Fail
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Update},
					Rule: admissionv1.Rule{APIGroups: []string{"kubevirt.io"}, APIVersions: []string{"*"},
						Resources: []string{"virtualmachineinstances"}},
				},
			}}},
			Validations: []admissionv1.Validation{{
				Expression: "!has(object.status) && !has(oldObject.status) || has(object.status) && has(oldObject.status) && object.status == oldObject.status",
				Message:    "status changes refused by the test",
			}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}},
		},
	}
	if err := k8s(t).Create(ctx, policy); err != nil {
		t.Fatalf("creating policy: %v", err)
	}
	t.Cleanup(func() { _ = k8s(t).Delete(context.Background(), policy) })
	if err := k8s(t).Create(ctx, binding); err != nil {
		t.Fatalf("creating binding: %v", err)
	}
	t.Cleanup(func() { _ = k8s(t).Delete(context.Background(), binding) })
	// Policies take effect once the apiserver's policy informer has them: a dry-run status
	// change (admission runs, nothing is stored) must be refused before the test relies on it.
	harness.Eventually(t, ctx, 30*time.Second, "the policy refusing a status change", func(ctx context.Context) (bool, error) {
		vmi := getVMI(t, ns, "vm-1")
		vmi.Status.Phase = kubevirtv1.Scheduled
		err := k8s(t).Update(ctx, vmi, client.DryRunAll)
		return apierrors.IsInvalid(err) || apierrors.IsForbidden(err), nil
	})
}
