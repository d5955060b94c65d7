package deploy_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/client-go/rest"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
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
		o = o.DeepCopy()
		namespaced, err := c.IsObjectNamespaced(o)
		if err != nil {
			t.Fatal(err)
		}
		if namespaced {
			o.SetNamespace(ns)
		} else {
			t.Cleanup(func() { _ = c.Delete(context.Background(), o) })
		}
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// TestAutoscalerProviderRBAC runs the autoscaler-provider in-process with the identity of the
// chart's ServiceAccount on both clusters, bound to exactly the chart's Role (management) and
// ClusterRole (tenant): its caches sync and cluster-autoscaler's calls (NodeGroups, TargetSize,
// IncreaseSize through /scale) work. Then the Role loses update on machinedeployments/scale and
// NodeGroupIncreaseSize fails with Forbidden.
func TestAutoscalerProviderRBAC(t *testing.T) {
	ctx := testCtx(t)
	const ns = "deploy-rbac-autoscaler"
	sa := release + "-autoscaler-provider"
	mgmt, tenant := env.Management.Client, env.Tenant.Client

	// Management: the chart's Role and RoleBinding, created for real.
	createNamespace(t, ctx, mgmt, ns)
	mobjs := render(t, "tenantcloud", ns, mgmtSets...)
	applyRendered(t, ctx, mgmt, ns, mobjs, map[string]string{"Role": sa, "RoleBinding": sa})
	mUser, err := env.Management.AddUser(serviceAccountUser(ns, sa))
	if err != nil {
		t.Fatal(err)
	}
	// Tenant: the tenant chart's ClusterRole and binding for the same ServiceAccount name.
	createNamespace(t, ctx, tenant, ns)
	tobjs := render(t, "tenantcloud-tenant", ns, tenantSets...)
	applyRendered(t, ctx, tenant, ns, tobjs, map[string]string{"ClusterRole": "autoscaler-provider", "ClusterRoleBinding": "autoscaler-provider"})
	tUser, err := env.Tenant.AddUser(serviceAccountUser(ns, sa))
	if err != nil {
		t.Fatal(err)
	}

	// A node group of this tenant, created by the admin (Cluster API's part).
	md := capi.NewMachineDeployment(ns, "workers", cluster, "worker", 1)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "4"}
	for _, obj := range []client.Object{
		capi.NewCluster(ns, cluster),
		capi.NewKubevirtMachineTemplate(ns, "worker", cluster, 2, "2Gi"),
		md,
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	cl := startProvider(t, ctx, infra.Scope{Namespace: ns, ClusterName: cluster}, mUser.Config, tUser.Config)
	group := autoscaler.GroupID(ns, md.Name)

	groups, err := cl.NodeGroups(ctx, &protos.NodeGroupsRequest{})
	if err != nil {
		t.Fatalf("NodeGroups with the chart's Role: %v", err)
	}
	if ids := groupIDs(groups); !slices.Equal(ids, []string{group}) {
		t.Fatalf("NodeGroups = %v, want [%s]", ids, group)
	}
	size, err := cl.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: group})
	if err != nil || size.GetTargetSize() != 1 {
		t.Fatalf("NodeGroupTargetSize = %v, %v; want 1", size.GetTargetSize(), err)
	}
	start := time.Now()
	if _, err := cl.NodeGroupIncreaseSize(ctx, &protos.NodeGroupIncreaseSizeRequest{Id: group, Delta: 1}); err != nil {
		t.Fatalf("NodeGroupIncreaseSize with the chart's Role: %v", err)
	}
	t.Logf("NodeGroupIncreaseSize +1 with the chart's Role took %s", time.Since(start))
	got := &clusterv1.MachineDeployment{}
	if err := mgmt.Get(ctx, client.ObjectKeyFromObject(md), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Replicas == nil || *got.Spec.Replicas != 2 {
		t.Fatalf("after IncreaseSize replicas = %v, want 2", got.Spec.Replicas)
	}

	// Take update on machinedeployments/scale away, wait until the authorizer says so, and
	// the same call must now be refused.
	role := &rbacv1.Role{}
	if err := mgmt.Get(ctx, client.ObjectKey{Namespace: ns, Name: sa}, role); err != nil {
		t.Fatal(err)
	}
	removed := false
	for i, r := range role.Rules {
		if slices.Contains(r.Resources, "machinedeployments/scale") {
			role.Rules[i].Verbs = slices.DeleteFunc(slices.Clone(r.Verbs), func(v string) bool { return v == "update" })
			removed = len(role.Rules[i].Verbs) < len(r.Verbs)
		}
	}
	if !removed {
		t.Fatalf("chart Role %s has no update on machinedeployments/scale: %v", sa, role.Rules)
	}
	if err := mgmt.Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitDenied(t, ctx, mUser.Config, authorizationv1.ResourceAttributes{
		Namespace: ns, Verb: "update", Group: clusterv1.GroupVersion.Group, Resource: "machinedeployments", Subresource: "scale",
	})
	t.Logf("the authorizer denied update on machinedeployments/scale %s after the Role update", time.Since(start))
	_, err = cl.NodeGroupIncreaseSize(ctx, &protos.NodeGroupIncreaseSizeRequest{Id: group, Delta: 1})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
		t.Fatalf("NodeGroupIncreaseSize without update on machinedeployments/scale: got %v, want a Forbidden error", err)
	}
	t.Logf("without update on machinedeployments/scale: %v", err)
}

func groupIDs(r *protos.NodeGroupsResponse) []string {
	var ids []string
	for _, g := range r.GetNodeGroups() {
		ids = append(ids, g.GetId())
	}
	return ids
}

// waitDenied polls a SelfSubjectAccessReview as the user until attrs is denied: RBAC changes
// reach the authorizer through its informers, so this is the point from which a call fails.
func waitDenied(t *testing.T, ctx context.Context, cfg *rest.Config, attrs authorizationv1.ResourceAttributes) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := authorizationv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}
		if err := c.Create(ctx, review); err != nil {
			return false, err
		}
		return !review.Status.Allowed, nil
	})
	if err != nil {
		t.Fatalf("%s %s/%s still allowed after the Role changed: %v", attrs.Verb, attrs.Resource, attrs.Subresource, err)
	}
}

// startProvider runs the provider for scope in-process with the given infra and tenant
// credentials, served over loopback TCP, and returns a client speaking to it as
// cluster-autoscaler does.
func startProvider(t *testing.T, ctx context.Context, scope infra.Scope, infraCfg, tenantCfg *rest.Config) protos.CloudProviderClient {
	t.Helper()
	ic, err := infra.NewWithOptions(infraCfg, scope, autoscaler.InfraOptions())
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := autoscaler.NewNodeCache(tenantCfg)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := autoscaler.New(pctx, autoscaler.Config{Infra: ic, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	defer startCancel()
	if err := p.Start(startCtx); err != nil {
		t.Fatalf("provider caches did not sync with the chart's RBAC: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := autoscaler.NewServer(p, nil)
	srv.SetReady()
	go func() { _ = srv.GRPC.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(time.Second) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(autoscaler.Codec())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return protos.NewCloudProviderClient(conn)
}
