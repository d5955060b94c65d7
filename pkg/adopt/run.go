package adopt

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Mode is what a run does.
type Mode string

const (
	// DryRun lists what would be claimed and refused, and changes nothing (the default).
	DryRun Mode = "dry-run"
	// ApplyMode marks the proven objects.
	ApplyMode Mode = "apply"
	// RollbackDryRun lists the adopted objects a rollback would release.
	RollbackDryRun Mode = "rollback-dry-run"
	// RollbackMode releases every adopted object back to the upstream components.
	RollbackMode Mode = "rollback"
)

// Summary counts a run's outcome.
type Summary struct {
	Claimed, AlreadyAdopted, Refused, Marked, Released int
}

// Run is one operator run for the tenant of o: Collect, Plan, print the plan to out and, in
// ApplyMode, Apply it; or list (and in RollbackMode release) the adopted objects.
func Run(ctx context.Context, infraClient client.Client, tenantClient client.Reader, o Options, mode Mode, out io.Writer) (Summary, error) {
	var sum Summary
	if err := o.Scope.Validate(); err != nil {
		return sum, err
	}
	switch mode {
	case RollbackDryRun, RollbackMode:
		objs, err := Adopted(ctx, infraClient, o.Scope)
		if err != nil {
			return sum, err
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ACTION\tKIND\tNAME\tADDED LABELS")
		for _, obj := range objs {
			action := "would release"
			if mode == RollbackMode {
				if err := Release(ctx, infraClient, obj); err != nil {
					_ = tw.Flush()
					return sum, err
				}
				action = "released"
				sum.Released++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", action, kindOf(obj), obj.GetName(), obj.GetAnnotations()[AnnotationAddedLabels])
		}
		if err := tw.Flush(); err != nil {
			return sum, err
		}
		fmt.Fprintf(out, "%d adopted objects of cluster %s in %s; %d released\n", len(objs), o.Scope.ClusterName, o.Scope.Namespace, sum.Released)
		return sum, nil
	case DryRun, ApplyMode:
	default:
		return sum, fmt.Errorf("unknown mode %q", mode)
	}

	inv, err := Collect(ctx, infraClient, tenantClient, o.Scope)
	if err != nil {
		return sum, err
	}
	plan := Plan(o, inv)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERDICT\tKIND\tNAME\tPROOF\tREASON")
	for _, it := range plan {
		switch it.Verdict {
		case Claim:
			sum.Claimed++
		case Claimed:
			sum.AlreadyAdopted++
		case Refuse:
			sum.Refused++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Verdict, it.Kind, it.Name, it.Proof, it.Reason)
	}
	if err := tw.Flush(); err != nil {
		return sum, err
	}
	if mode == ApplyMode {
		sum.Marked, err = Apply(ctx, infraClient, o.Scope, plan)
		fmt.Fprintf(out, "marked %d of %d proven objects\n", sum.Marked, sum.Claimed)
		if err != nil {
			return sum, err
		}
	} else {
		fmt.Fprintln(out, "dry run: nothing changed (apply to mark the claimed objects)")
	}
	fmt.Fprintf(out, "cluster %s in %s: %d to claim, %d already adopted, %d refused\n",
		o.Scope.ClusterName, o.Scope.Namespace, sum.Claimed, sum.AlreadyAdopted, sum.Refused)
	return sum, nil
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *corev1.Service:
		return KindService
	case *cdiv1.DataVolume:
		return KindDataVolume
	case *corev1.PersistentVolumeClaim:
		return KindClaim
	}
	return fmt.Sprintf("%T", obj)
}
