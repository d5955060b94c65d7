package deploy_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

// TestAutoscalerProviderChartRBAC runs the real autoscaler-provider binary with the chart's
// rendered args and config (plaintext gRPC here; the chart's is mTLS), as the management
// chart's ServiceAccount bound to exactly its Role and the tenant chart's bound to its
// ClusterRole, and makes cluster-autoscaler's calls: node groups, sizes, nodes, template, a
// scale-up and a scale-down through DeleteNodes, and the Warning Event for a
// MachineDeployment with invalid bounds. Then it removes each permission in turn.
func TestAutoscalerProviderChartRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns = "deploy-rbac-asp"
	mgmt, tenant := env.Management.Client, env.Tenant.Client
	createNamespace(t, ctx, mgmt, ns)
	workers := capi.NewMachineDeployment(ns, "workers", simCluster, "worker", 1)
	workers.Annotations = map[string]string{autoscaler.AnnotationMinSize: "1", autoscaler.AnnotationMaxSize: "3"}
	// The group DeleteNodes shrinks each run; the reset grows it back.
	victims := capi.NewMachineDeployment(ns, "victims", simCluster, "worker", 1)
	victims.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "2"}
	broken := capi.NewMachineDeployment(ns, "broken", simCluster, "worker", 0)
	broken.Annotations = map[string]string{autoscaler.AnnotationMinSize: "1"} // max missing: invalid
	for _, o := range []client.Object{
		capi.NewCluster(ns, simCluster),
		capi.NewKubevirtMachineTemplate(ns, "worker", simCluster, 2, "2Gi"),
		workers, victims, broken,
	} {
		must(t, mgmt.Create(ctx, o))
	}

	mobjs := render(t, "tenantcloud", ns, "clusterName="+simCluster, "ccm.enabled=false", "csiController.enabled=false")
	tobjs := render(t, "tenantcloud-tenant", ns, "clusterName="+simCluster, "infraNamespace="+ns,
		"tenantRBAC.ccm=false", "tenantRBAC.clusterAutoscaler=false")
	name := release + "-autoscaler-provider"
	mRole, mUser := bindChartRole(t, ctx, env.Management, "management", ns, mobjs, "Role", name)
	tRole, tUser := bindChartRole(t, ctx, env.Tenant, "tenant", ns, tobjs, "ClusterRole", "tenantcloud-"+ns+"-"+name)

	dir := t.TempDir()
	cfg := localConfig(t, mobjs, dir, mUser.Kubeconfig, tUser.Kubeconfig)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := lis.Addr().String()
	must(t, lis.Close())
	args := chartrender.LocalArgs(containerArgs(t, mobjs, "Deployment", name, "autoscaler-provider"), map[string]string{
		"--config": cfg, "--listen": addr, "--metrics-bind-address": "0",
		"--tls-cert": "", "--tls-key": "", "--tls-ca": "",
	})
	bin := filepath.Join(programs(t), "autoscaler-provider")

	groupNode := func(ctx context.Context, md string) (*corev1.Node, error) {
		var nodes corev1.NodeList
		if err := tenant.List(ctx, &nodes); err != nil {
			return nil, err
		}
		for i, n := range nodes.Items {
			if strings.HasPrefix(n.Annotations[capi.AnnotationSimVMI], ns+"/"+md+"-") && n.Spec.ProviderID != "" && n.DeletionTimestamp == nil {
				return &nodes.Items[i], nil
			}
		}
		return nil, nil
	}
	replicas := func(ctx context.Context, md *clusterv1.MachineDeployment) (int32, error) {
		cur := &clusterv1.MachineDeployment{}
		err := mgmt.Get(ctx, client.ObjectKeyFromObject(md), cur)
		return *cur.Spec.Replicas, err
	}
	setReplicas := func(ctx context.Context, md *clusterv1.MachineDeployment, n int32) error {
		return waitFor(ctx, "scaling "+md.Name, func(ctx context.Context) (bool, error) {
			cur := &clusterv1.MachineDeployment{}
			if err := mgmt.Get(ctx, client.ObjectKeyFromObject(md), cur); err != nil {
				return false, err
			}
			cur.Spec.Replicas = &n
			err := mgmt.Update(ctx, cur)
			return err == nil, client.IgnoreNotFound(err)
		})
	}
	// reset: the groups back at one node each, a registered victim Node, no Events.
	reset := func(ctx context.Context) error {
		if err := mgmt.DeleteAllOf(ctx, &corev1.Event{}, client.InNamespace(ns)); err != nil {
			return err
		}
		// The last run's scale-down acted on first: growing the group back while its marked
		// Machine is still live would keep that Machine, marked, and the next run's DeleteNodes
		// would only take off the replica that mark is owed, without needing to mark anything.
		if err := waitFor(ctx, "the last scale-down carried out", func(ctx context.Context) (bool, error) {
			want, err := replicas(ctx, victims)
			if err != nil {
				return false, err
			}
			var machines clusterv1.MachineList
			if err := mgmt.List(ctx, &machines, client.InNamespace(ns),
				client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: victims.Name}); err != nil {
				return false, err
			}
			live := 0
			for _, m := range machines.Items {
				if m.DeletionTimestamp == nil {
					live++
				}
			}
			return int32(live) <= want, nil
		}); err != nil {
			return err
		}
		for _, md := range []*clusterv1.MachineDeployment{workers, victims} {
			if err := setReplicas(ctx, md, 1); err != nil {
				return err
			}
		}
		// Settled: every Machine of the namespace live, one victim Node, and it is the Node of
		// the victims' live Machine (not the one of the Machine the last run deleted).
		return waitFor(ctx, "one registered victim Node", func(ctx context.Context) (bool, error) {
			var machines clusterv1.MachineList
			if err := mgmt.List(ctx, &machines, client.InNamespace(ns)); err != nil {
				return false, err
			}
			live := map[string]bool{}
			for _, m := range machines.Items {
				if m.DeletionTimestamp != nil {
					return false, nil
				}
				if m.Labels[clusterv1.MachineDeploymentNameLabel] == victims.Name && m.Spec.ProviderID != "" {
					live[m.Spec.ProviderID] = true
				}
			}
			var nodes corev1.NodeList
			if err := tenant.List(ctx, &nodes); err != nil {
				return false, err
			}
			count := 0
			for _, n := range nodes.Items {
				if strings.HasPrefix(n.Annotations[capi.AnnotationSimVMI], ns+"/"+victims.Name+"-") {
					if !live[n.Spec.ProviderID] {
						return false, nil
					}
					count++
				}
			}
			return count == 1 && len(live) == 1, nil
		})
	}
	must(t, reset(ctx))
	worker, err := groupNode(ctx, workers.Name)
	must(t, err)
	must(t, waitFor(ctx, "the workers' Node", func(ctx context.Context) (bool, error) {
		worker, err = groupNode(ctx, workers.Name)
		return worker != nil, err
	}))

	var conn *grpc.ClientConn
	var cl protos.CloudProviderClient
	group := autoscaler.GroupID(ns, workers.Name)
	call := func(c *component, what string, err error) error { return c.check(what, err) }
	p := &proof{
		grants:   []*grant{mRole, tRole},
		clusters: []*harness.Cluster{env.Management, env.Tenant},
		start: func(ctx context.Context) (*component, error) {
			c, err := startBinary(dir, "autoscaler-provider", bin, args...)
			if err != nil {
				return nil, err
			}
			conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodec(autoscaler.Codec())))
			cl = protos.NewCloudProviderClient(conn)
			return c, err
		},
		reset: func(ctx context.Context) error {
			_ = conn.Close()
			return reset(ctx)
		},
		scenarios: []scenario{
			{"Start: caches sync, health SERVING", func(ctx context.Context, c *component) error {
				hc := healthpb.NewHealthClient(conn)
				return c.await(ctx, "health SERVING", func(ctx context.Context) (bool, error) {
					rsp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
					return err == nil && rsp.GetStatus() == healthpb.HealthCheckResponse_SERVING, err
				})
			}},
			{"NodeGroups (and a Warning Event for the invalid one)", func(ctx context.Context, c *component) error {
				rsp, err := cl.NodeGroups(ctx, &protos.NodeGroupsRequest{})
				if err := call(c, "NodeGroups", err); err != nil {
					return err
				}
				if ids := groupIDs(rsp); !slices.Contains(ids, group) {
					return fmt.Errorf("NodeGroups = %v, want %s among them", ids, group)
				}
				return c.await(ctx, autoscaler.EventReasonInvalidAnnotations+" Event on "+broken.Name, func(ctx context.Context) (bool, error) {
					var evs corev1.EventList
					if err := mgmt.List(ctx, &evs, client.InNamespace(ns)); err != nil {
						return false, err
					}
					return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
						return e.Reason == autoscaler.EventReasonInvalidAnnotations && e.InvolvedObject.Name == broken.Name
					}), nil
				})
			}},
			{"NodeGroupTargetSize, NodeGroupNodes, NodeGroupForNode", func(ctx context.Context, c *component) error {
				size, err := cl.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: group})
				if err := call(c, "NodeGroupTargetSize", err); err != nil {
					return err
				}
				if size.GetTargetSize() != 1 {
					return fmt.Errorf("target size %d, want 1", size.GetTargetSize())
				}
				nodes, err := cl.NodeGroupNodes(ctx, &protos.NodeGroupNodesRequest{Id: group})
				if err := call(c, "NodeGroupNodes", err); err != nil {
					return err
				}
				if !slices.ContainsFunc(nodes.GetInstances(), func(i *protos.Instance) bool { return i.GetId() == worker.Spec.ProviderID }) {
					return fmt.Errorf("NodeGroupNodes = %v, want %s", nodes.GetInstances(), worker.Spec.ProviderID)
				}
				return c.await(ctx, "NodeGroupForNode "+worker.Name, func(ctx context.Context) (bool, error) {
					rsp, err := cl.NodeGroupForNode(ctx, &protos.NodeGroupForNodeRequest{Node: &protos.ExternalGrpcNode{
						Name: worker.Name, ProviderID: worker.Spec.ProviderID, Labels: worker.Labels}})
					if err != nil {
						return false, err
					}
					return rsp.GetNodeGroup().GetId() == group, nil
				})
			}},
			{"NodeGroupTemplateNodeInfo", func(ctx context.Context, c *component) error {
				_, err := cl.NodeGroupTemplateNodeInfo(ctx, &protos.NodeGroupTemplateNodeInfoRequest{Id: group})
				return call(c, "NodeGroupTemplateNodeInfo", err)
			}},
			{"NodeGroupIncreaseSize (scale subresource)", func(ctx context.Context, c *component) error {
				_, err := cl.NodeGroupIncreaseSize(ctx, &protos.NodeGroupIncreaseSizeRequest{Id: group, Delta: 1})
				if err := call(c, "NodeGroupIncreaseSize", err); err != nil {
					return err
				}
				return c.await(ctx, workers.Name+" at 2 replicas", func(ctx context.Context) (bool, error) {
					r, err := replicas(ctx, workers)
					return r == 2, err
				})
			}},
			{"NodeGroupDeleteNodes (delete-machine mark, scale down)", func(ctx context.Context, c *component) error {
				n, err := groupNode(ctx, victims.Name)
				if err != nil || n == nil {
					return fmt.Errorf("%w: no victim Node: %v", errSetup, err)
				}
				_, err = cl.NodeGroupDeleteNodes(ctx, &protos.NodeGroupDeleteNodesRequest{Id: autoscaler.GroupID(ns, victims.Name),
					Nodes: []*protos.ExternalGrpcNode{{Name: n.Name, ProviderID: n.Spec.ProviderID, Labels: n.Labels}}})
				if err := call(c, "NodeGroupDeleteNodes", err); err != nil {
					return err
				}
				return c.await(ctx, victims.Name+" at 0 replicas", func(ctx context.Context) (bool, error) {
					r, err := replicas(ctx, victims)
					return r == 0, err
				})
			}},
		},
	}
	p.run(t, ctx)
}
