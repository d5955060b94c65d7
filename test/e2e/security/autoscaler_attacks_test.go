package security_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// notOK checks that err is an error (any code but OK) and describes it.
func notOK(t *testing.T, what string, err error) string {
	t.Helper()
	if err == nil {
		t.Errorf("%s: accepted", what)
		return what + ": OK"
	}
	return what + ": " + status.Code(err).String()
}

func autoscalerAttacks() []attack {
	groupFor := func(nodes ...*protos.ExternalGrpcNode) func(t *testing.T, w *world) outcome {
		return func(t *testing.T, w *world) outcome {
			var res []string
			for _, n := range nodes {
				rsp, err := w.provider.NodeGroupForNode(w.call(t), &protos.NodeGroupForNodeRequest{Node: n})
				if err != nil {
					res = append(res, n.ProviderID+": "+status.Code(err).String())
					continue
				}
				if id := rsp.GetNodeGroup().GetId(); id != "" {
					t.Errorf("node %q is in node group %q", n.ProviderID, id)
				}
				res = append(res, n.ProviderID+": no group")
			}
			return refused(strings.Join(res, ", "))
		}
	}
	alphaGroup := autoscaler.GroupID(infraNS, workers)
	return []attack{
		{"8a", "NodeGroupForNode: beta's and gamma's VMs", "no node group", groupFor(
			&protos.ExternalGrpcNode{Name: betaVM, ProviderID: infra.ProviderID(betaVM)},
			&protos.ExternalGrpcNode{Name: gammaVM, ProviderID: infra.ProviderID(gammaVM)},
		)},
		{"8b", "NodeGroupForNode: beta's pending Machine id", "no node group", groupFor(
			&protos.ExternalGrpcNode{Name: betaMachine, ProviderID: autoscaler.PendingInstanceID(infraNS, betaMachine)},
			&protos.ExternalGrpcNode{Name: "x", ProviderID: autoscaler.PendingInstanceID(otherNS, "gamma-m1")},
		)},
		{"8c", "DeleteNodes on our group naming beta's machine", "refused; no delete-machine mark, no scale-down", func(t *testing.T, w *world) outcome {
			var res []string
			for _, n := range []*protos.ExternalGrpcNode{
				{Name: betaVM, ProviderID: infra.ProviderID(betaVM)},
				{Name: autoscaler.PendingInstanceID(infraNS, betaMachine), ProviderID: autoscaler.PendingInstanceID(infraNS, betaMachine)},
				{Name: gammaVM, ProviderID: infra.ProviderID(gammaVM)},
			} {
				_, err := w.provider.NodeGroupDeleteNodes(w.call(t), &protos.NodeGroupDeleteNodesRequest{Id: alphaGroup, Nodes: []*protos.ExternalGrpcNode{n}})
				res = append(res, notOK(t, n.Name, err))
			}
			return refused(strings.Join(res, ", "))
		}},
		{"8d", "scale beta's / gamma's node group", "NotFound/InvalidArgument; MachineDeployments untouched", func(t *testing.T, w *world) outcome {
			var res []string
			for _, id := range []string{autoscaler.GroupID(infraNS, betaWorkers), autoscaler.GroupID(otherNS, "gamma-workers")} {
				_, err := w.provider.NodeGroupIncreaseSize(w.call(t), &protos.NodeGroupIncreaseSizeRequest{Id: id, Delta: 1})
				res = append(res, code(t, "increase "+id, err, codes.NotFound, codes.InvalidArgument))
				_, err = w.provider.NodeGroupDecreaseTargetSize(w.call(t), &protos.NodeGroupDecreaseTargetSizeRequest{Id: id, Delta: -1})
				res = append(res, code(t, "decrease", err, codes.NotFound, codes.InvalidArgument))
				_, err = w.provider.NodeGroupDeleteNodes(w.call(t), &protos.NodeGroupDeleteNodesRequest{Id: id,
					Nodes: []*protos.ExternalGrpcNode{{Name: betaVM, ProviderID: infra.ProviderID(betaVM)}}})
				res = append(res, code(t, "delete", err, codes.NotFound, codes.InvalidArgument))
			}
			return refused(strings.Join(res, ", "))
		}},
		{"8e", "enumerate node groups and their nodes", "only our group and our machines", func(t *testing.T, w *world) outcome {
			groups, err := w.provider.NodeGroups(w.call(t), &protos.NodeGroupsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, g := range groups.GetNodeGroups() {
				ids = append(ids, g.GetId())
			}
			if len(ids) != 1 || ids[0] != alphaGroup {
				t.Errorf("node groups %v, want only %s", ids, alphaGroup)
			}
			nodes, err := w.provider.NodeGroupNodes(w.call(t), &protos.NodeGroupNodesRequest{Id: alphaGroup})
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range nodes.GetInstances() {
				if in.GetId() != infra.ProviderID(w.alphaVM) {
					t.Errorf("instance %q in our group", in.GetId())
				}
			}
			return refused("groups " + strings.Join(ids, ",") + "; instances: ours only")
		}},
	}
}

func autoscalerMalformedAttack() attack {
	return attack{"10i", "node-group ids: 253 chars, unicode, traversal", "NotFound/InvalidArgument", func(t *testing.T, w *world) outcome {
		var res []string
		for _, c := range [][2]string{
			{"253", infraNS + "/" + long253()},
			{"unicode", infraNS + "/wörkers"},
			{"traversal", infraNS + "/../" + otherNS + "/gamma-workers"},
		} {
			_, err := w.provider.NodeGroupIncreaseSize(w.call(t), &protos.NodeGroupIncreaseSizeRequest{Id: c[1], Delta: 1})
			res = append(res, code(t, c[0], err, codes.NotFound, codes.InvalidArgument))
		}
		return refused(strings.Join(res, ", "))
	}}
}
