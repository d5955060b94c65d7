package adopt

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// clients holds world() in fake infra and tenant clients (fresh resourceVersions).
func clients(t *testing.T, inv Inventory) (infraC, tenantC client.Client) {
	t.Helper()
	scheme, err := infra.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	var infraObjs, tenantObjs []client.Object
	for i := range inv.InfraServices {
		o := inv.InfraServices[i].DeepCopy()
		o.ResourceVersion = ""
		infraObjs = append(infraObjs, o)
	}
	for i := range inv.DataVolumes {
		o := inv.DataVolumes[i].DeepCopy()
		o.ResourceVersion = ""
		infraObjs = append(infraObjs, o)
	}
	for i := range inv.Claims {
		o := inv.Claims[i].DeepCopy()
		o.ResourceVersion = ""
		infraObjs = append(infraObjs, o)
	}
	for i := range inv.TenantServices {
		tenantObjs = append(tenantObjs, inv.TenantServices[i].DeepCopy())
	}
	for i := range inv.TenantPVs {
		tenantObjs = append(tenantObjs, inv.TenantPVs[i].DeepCopy())
	}
	infraC = fake.NewClientBuilder().WithScheme(scheme).WithObjects(infraObjs...).Build()
	tenantC = fake.NewClientBuilder().WithScheme(scheme).WithObjects(tenantObjs...).Build()
	return infraC, tenantC
}

func run(t *testing.T, ic client.Client, tc client.Reader, mode Mode) (Summary, string) {
	t.Helper()
	var out bytes.Buffer
	sum, err := Run(context.Background(), ic, tc, options, mode, &out)
	if err != nil {
		t.Fatalf("%s: %v\n%s", mode, err, out.String())
	}
	return sum, out.String()
}

// TestRunLifecycle: dry run changes nothing; apply marks exactly what the ownership checks
// accept; a second apply is a no-op (idempotent, and how a run cut short is finished);
// rollback restores the objects' labels and annotations as the upstream components left them.
func TestRunLifecycle(t *testing.T) {
	ctx := context.Background()
	ic, tc := clients(t, world())
	before := snapshot(t, ic)

	if sum, out := run(t, ic, tc, DryRun); sum.Claimed != 2 || sum.Marked != 0 || !strings.Contains(out, "nothing changed") {
		t.Fatalf("dry run: %+v\n%s", sum, out)
	}
	if after := snapshot(t, ic); after != before {
		t.Fatalf("dry run changed objects:\n%s\n---\n%s", before, after)
	}

	if sum, out := run(t, ic, tc, ApplyMode); sum.Marked != 2 {
		t.Fatalf("apply: %+v\n%s", sum, out)
	}
	objs, err := Adopted(ctx, ic, scope)
	if err != nil || len(objs) != 3 {
		t.Fatalf("adopted after apply: %d (Service, DataVolume and its claim), %v", len(objs), err)
	}
	for _, o := range objs {
		if _, claim := o.(*corev1.PersistentVolumeClaim); !claim && !scope.Owns(o) {
			t.Errorf("%s %s is adopted but fails Scope.Owns", kindOf(o), o.GetName())
		}
		for k, v := range map[string]string{"metallb.io/ip-allocated-from-pool": poolPublic, "cdi.kubevirt.io/storage.deleteAfterCompletion": "false"} {
			if _, had := o.GetAnnotations()[k]; had && o.GetAnnotations()[k] != v {
				t.Errorf("%s lost annotation %s", o.GetName(), k)
			}
		}
	}
	if sum, out := run(t, ic, tc, ApplyMode); sum.Marked != 0 || sum.AlreadyAdopted != 2 {
		t.Fatalf("second apply: %+v\n%s", sum, out)
	}

	if sum, _ := run(t, ic, tc, RollbackDryRun); sum.Released != 0 {
		t.Fatalf("rollback dry run released %d", sum.Released)
	}
	if sum, out := run(t, ic, tc, RollbackMode); sum.Released != 3 {
		t.Fatalf("rollback: %+v\n%s", sum, out)
	}
	if after := snapshot(t, ic); after != before {
		t.Fatalf("rollback left objects different from the upstream ones:\n%s\n---\n%s", before, after)
	}
	if sum, _ := run(t, ic, tc, DryRun); sum.Claimed != 2 {
		t.Fatalf("after rollback the objects are not claimable again: %+v", sum)
	}
}

// TestApplyRefusesChangedObject: an object changed between Plan and Apply (its ownership was
// proven on the old version) is not marked.
func TestApplyRefusesChangedObject(t *testing.T) {
	ctx := context.Background()
	ic, tc := clients(t, world())
	inv, err := Collect(ctx, ic, tc, scope)
	if err != nil {
		t.Fatal(err)
	}
	plan := Plan(options, inv)
	svc := &corev1.Service{}
	if err := ic.Get(ctx, client.ObjectKey{Namespace: infraNS, Name: plan[0].Name}, svc); err != nil {
		t.Fatal(err)
	}
	svc.Labels[infra.LabelClusterName] = "beta"
	if err := ic.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	n, err := Apply(ctx, ic, scope, plan)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "changed since it was listed") {
		t.Fatalf("Apply over a changed object = %d, %v", n, err)
	}
	if err := ic.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	if svc.Labels[infra.LabelManagedBy] != "" {
		t.Fatal("the changed Service was marked")
	}
}

// snapshot renders every infra object's labels and annotations.
func snapshot(t *testing.T, c client.Client) string {
	t.Helper()
	inv, err := Collect(context.Background(), c, c, scope)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range inv.InfraServices {
		b.WriteString(s.Name + " " + render(s.Labels) + " " + render(s.Annotations) + "\n")
	}
	for _, d := range inv.DataVolumes {
		b.WriteString(d.Name + " " + render(d.Labels) + " " + render(d.Annotations) + "\n")
	}
	for _, c := range inv.Claims {
		b.WriteString("claim " + c.Name + " " + render(c.Labels) + " " + render(c.Annotations) + "\n")
	}
	return b.String()
}

func render(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + m[k] + ";")
	}
	return b.String()
}

// TestApplyResumes: a run cut short after marking a DataVolume's claim (marked first) and
// before the DataVolume is finished by the next run, and the rollback still removes every
// label the first run added.
func TestApplyResumes(t *testing.T) {
	ctx := context.Background()
	ic, tc := clients(t, world())
	before := snapshot(t, ic)
	inv, err := Collect(ctx, ic, tc, scope)
	if err != nil {
		t.Fatal(err)
	}
	plan := Plan(options, inv)
	dv := plan[1]
	if dv.Kind != KindDataVolume || dv.first == nil {
		t.Fatalf("want a DataVolume with its claim:\n%s", describe(plan))
	}
	if err := mark(ctx, ic, scope, *dv.first); err != nil { // the crash comes right after this
		t.Fatal(err)
	}
	if sum, out := run(t, ic, tc, ApplyMode); sum.Marked != 2 {
		t.Fatalf("resumed apply: %+v\n%s", sum, out)
	}
	if sum, out := run(t, ic, tc, RollbackMode); sum.Released != 3 {
		t.Fatalf("rollback: %+v\n%s", sum, out)
	}
	if after := snapshot(t, ic); after != before {
		t.Fatalf("rollback after a resumed run left changes:\n%s\n---\n%s", before, after)
	}
}
