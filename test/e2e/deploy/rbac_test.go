package deploy_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/chartrender"
)

// serviceAccountUser is the username the apiserver gives ServiceAccount ns/name's tokens; RBAC
// matches a ServiceAccount subject against exactly this name, so a harness identity with it
// stands for the chart's ServiceAccount.
func serviceAccountUser(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }

// applyRendered creates the rendered objects of the given kinds for real (namespaced ones in
// ns) with the admin client, deleting cluster-scoped ones at the end of the test.
func applyRendered(t *testing.T, ctx context.Context, c client.Client, ns string, objs []*unstructured.Unstructured, names map[string]string) {
	t.Helper()
	for _, o := range objs {
		if want, ok := names[o.GetKind()]; !ok || !strings.HasSuffix(o.GetName(), want) {
			continue
		}
		o, namespaced, err := chartrender.Placed(c, ns, o)
		if err != nil {
			t.Fatal(err)
		}
		if !namespaced {
			t.Cleanup(func() { _ = c.Delete(context.Background(), o) })
		}
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

func groupIDs(r *protos.NodeGroupsResponse) []string {
	var ids []string
	for _, g := range r.GetNodeGroups() {
		ids = append(ids, g.GetId())
	}
	return ids
}
