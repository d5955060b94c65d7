package autoscaler_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

const clusterName = "alpha"

var nsCounter atomic.Int32

// fixture is one tenant (namespace + cluster "alpha") with a provider served over real TCP.
// Tests create their infra objects first and then call start, so the provider's caches sync
// with everything already there; later changes are awaited with eventually.
type fixture struct {
	t      testing.TB
	ctx    context.Context
	ns     string
	scope  infra.Scope
	mgmt   client.Client
	tenant client.Client

	selector map[string]string
	prov     *autoscaler.Provider
	cl       protos.CloudProviderClient
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	if env == nil {
		t.Skip("needs the control-plane harness; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	name := strings.ToLower(t.Name())
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, name)
	if len(name) > 40 {
		name = name[:40]
	}
	ns := fmt.Sprintf("as-%d-%s", nsCounter.Add(1), strings.Trim(name, "-"))
	f := &fixture{t: t, ctx: ctx, ns: ns, scope: infra.Scope{Namespace: ns, ClusterName: clusterName},
		mgmt: env.Management.Client, tenant: env.Tenant.Client}
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	return f
}

// start builds the provider over a scoped infra client and a tenant Node cache, and serves it.
func (f *fixture) start() protos.CloudProviderClient {
	f.t.Helper()
	ic, err := infra.NewWithOptions(env.Management.Config, f.scope, autoscaler.InfraOptions())
	if err != nil {
		f.t.Fatal(err)
	}
	nodes, err := autoscaler.NewNodeCache(env.Tenant.Config)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	f.prov, err = autoscaler.New(ctx, autoscaler.Config{Infra: ic, Nodes: nodes, NodeGroupSelector: f.selector})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.prov.Start(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	srv := autoscaler.NewServer(f.prov, nil)
	srv.SetReady()
	go func() { _ = srv.GRPC.Serve(lis) }()
	f.t.Cleanup(func() { srv.Stop(time.Second) })
	f.cl = dial(f.t, lis.Addr().String(), insecure.NewCredentials())
	return f.cl
}

// dial connects the way cluster-autoscaler does, with this package's codec (see wirecodec.go
// for why the stock one cannot be used with these generated types here).
func dial(t testing.TB, addr string, creds credentials.TransportCredentials) protos.CloudProviderClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(autoscaler.Codec())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return protos.NewCloudProviderClient(conn)
}

func (f *fixture) create(obj client.Object) {
	f.t.Helper()
	if err := f.mgmt.Create(f.ctx, obj); err != nil {
		f.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// eventually polls cond until it holds; a condition, not a fixed sleep, is what tests wait on.
func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	if err := wait.PollUntilContextTimeout(f.ctx, 10*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		f.t.Fatalf("waiting for %s: %v", what, err)
	}
}

func labelsFor(cluster string, extra map[string]string) map[string]string {
	l := map[string]string{infra.LabelClusterName: cluster}
	for k, v := range extra {
		l[k] = v
	}
	return l
}

func machineSpec(cluster, infraName string) clusterv1.MachineSpec {
	return clusterv1.MachineSpec{
		ClusterName: cluster,
		Bootstrap:   clusterv1.Bootstrap{DataSecretName: ptr("bootstrap-data")},
		InfrastructureRef: clusterv1.ContractVersionedObjectReference{
			APIGroup: "infrastructure.cluster.x-k8s.io", Kind: "KubevirtMachineTemplate", Name: infraName},
	}
}

func ptr[T any](v T) *T { return &v }

// mdOpts describe a MachineDeployment; zero values give a group of cluster alpha.
type mdOpts struct {
	cluster     string // label and spec.clusterName; default alpha
	specCluster string // overrides spec.clusterName only
	replicas    int32
	annotations map[string]string
	labels      map[string]string
	mutate      func(*clusterv1.MachineDeployment)
}

// bounds is the annotation pair of a group.
func bounds(min, max string) map[string]string {
	return map[string]string{autoscaler.AnnotationMinSize: min, autoscaler.AnnotationMaxSize: max}
}

func (f *fixture) md(name string, o mdOpts) *clusterv1.MachineDeployment {
	f.t.Helper()
	cluster := o.cluster
	if cluster == "" {
		cluster = clusterName
	}
	spec := cluster
	if o.specCluster != "" {
		spec = o.specCluster
	}
	md := &clusterv1.MachineDeployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: labelsFor(cluster, o.labels), Annotations: o.annotations},
		Spec: clusterv1.MachineDeploymentSpec{
			ClusterName: spec,
			Replicas:    ptr(o.replicas),
			Selector:    metav1.LabelSelector{MatchLabels: map[string]string{clusterv1.MachineDeploymentNameLabel: name}},
			Template: clusterv1.MachineTemplateSpec{
				ObjectMeta: clusterv1.ObjectMeta{Labels: map[string]string{clusterv1.MachineDeploymentNameLabel: name}},
				Spec:       machineSpec(spec, name+"-tmpl"),
			},
		},
	}
	if o.mutate != nil {
		o.mutate(md)
	}
	f.create(md)
	return md
}

func ownerRef(obj client.Object, kind string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: clusterv1.GroupVersion.String(), Kind: kind, Name: obj.GetName(),
		UID: obj.GetUID(), Controller: ptr(true), BlockOwnerDeletion: ptr(true)}
}

// ms creates a MachineSet controlled by md, in md's cluster.
func (f *fixture) ms(md *clusterv1.MachineDeployment, name string) *clusterv1.MachineSet {
	f.t.Helper()
	ms := &clusterv1.MachineSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: md.Labels,
			OwnerReferences: []metav1.OwnerReference{ownerRef(md, "MachineDeployment")}},
		Spec: clusterv1.MachineSetSpec{
			ClusterName: md.Spec.ClusterName,
			Selector:    md.Spec.Selector,
			Template:    md.Spec.Template,
		},
	}
	f.create(ms)
	return ms
}

// machineOpts describe a Machine; registered also creates the tenant Node.
type machineOpts struct {
	providerID string // "" = none yet
	registered bool   // create a tenant Node with providerID
	nodeRef    bool   // set status.nodeRef as Cluster API does once the Node exists
	phase      string
	mutate     func(*clusterv1.Machine)
}

// machine creates a Machine controlled by ms (and optionally its tenant Node).
func (f *fixture) machine(ms *clusterv1.MachineSet, name string, o machineOpts) *clusterv1.Machine {
	f.t.Helper()
	m := &clusterv1.Machine{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: ms.Labels,
			OwnerReferences: []metav1.OwnerReference{ownerRef(ms, "MachineSet")}},
		Spec: machineSpec(ms.Spec.ClusterName, name),
	}
	m.Spec.ProviderID = o.providerID
	if o.mutate != nil {
		o.mutate(m)
	}
	f.create(m)
	if o.nodeRef || o.phase != "" {
		if o.nodeRef {
			m.Status.NodeRef = clusterv1.MachineNodeReference{Name: nodeName(o.providerID)}
		}
		m.Status.Phase = o.phase
		if err := f.mgmt.Status().Update(f.ctx, m); err != nil {
			f.t.Fatalf("setting status of Machine %s: %v", name, err)
		}
	}
	if o.registered {
		f.node(o.providerID)
	}
	return m
}

// node creates a tenant Node with providerID; Nodes are cluster-scoped in the tenant, so the
// name is derived from the providerID, which tests make unique per namespace.
func (f *fixture) node(providerID string) *corev1.Node {
	f.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName(providerID)}, Spec: corev1.NodeSpec{ProviderID: providerID}}
	if err := f.tenant.Create(f.ctx, n); err != nil {
		f.t.Fatalf("creating tenant Node %s: %v", n.Name, err)
	}
	f.t.Cleanup(func() { _ = f.tenant.Delete(context.Background(), n) })
	return n
}

func nodeName(providerID string) string {
	return strings.TrimPrefix(providerID, infra.ProviderIDPrefix)
}

// pid is a providerID unique to this fixture.
func (f *fixture) pid(vm string) string { return infra.ProviderID(f.ns + "-" + vm) }

// group is the node-group id of MachineDeployment name.
func (f *fixture) group(name string) string { return autoscaler.GroupID(f.ns, name) }

// replicas reads spec.replicas from the API (not the provider's cache).
func (f *fixture) replicas(md *clusterv1.MachineDeployment) int32 {
	f.t.Helper()
	cur := &clusterv1.MachineDeployment{}
	if err := f.mgmt.Get(f.ctx, client.ObjectKeyFromObject(md), cur); err != nil {
		f.t.Fatal(err)
	}
	return *cur.Spec.Replicas
}

// setReplicas writes replicas directly, as an operator or Cluster API would.
func (f *fixture) setReplicas(md *clusterv1.MachineDeployment, n int32) {
	f.t.Helper()
	cur := &clusterv1.MachineDeployment{}
	if err := f.mgmt.Get(f.ctx, client.ObjectKeyFromObject(md), cur); err != nil {
		f.t.Fatal(err)
	}
	cur.Spec.Replicas = &n
	if err := f.mgmt.Update(f.ctx, cur); err != nil {
		f.t.Fatal(err)
	}
}

// getMachine reads a Machine from the API.
func (f *fixture) getMachine(m *clusterv1.Machine) *clusterv1.Machine {
	f.t.Helper()
	cur := &clusterv1.Machine{}
	if err := f.mgmt.Get(f.ctx, client.ObjectKeyFromObject(m), cur); err != nil {
		f.t.Fatal(err)
	}
	return cur
}

// wantCode fails unless err is a gRPC status with code and a message containing msg.
func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("got %v, want %v containing %q", err, code, msg)
	}
}

// fakeNode is what cluster-autoscaler sends for an instance that never registered.
func fakeNode(instanceID string) *protos.ExternalGrpcNode {
	return &protos.ExternalGrpcNode{Name: instanceID, ProviderID: instanceID}
}

// realNode is what cluster-autoscaler sends for a registered tenant Node.
func realNode(providerID string) *protos.ExternalGrpcNode {
	return &protos.ExternalGrpcNode{Name: nodeName(providerID), ProviderID: providerID,
		Labels: map[string]string{corev1.LabelHostname: nodeName(providerID)}}
}

// getNode reads the tenant Node created for providerID.
func (f *fixture) getNode(providerID string) *corev1.Node {
	f.t.Helper()
	n := &corev1.Node{}
	if err := f.tenant.Get(f.ctx, client.ObjectKey{Name: nodeName(providerID)}, n); err != nil {
		f.t.Fatal(err)
	}
	return n
}
