package crash

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clientretry "k8s.io/client-go/util/retry"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

const (
	scaleNS  = "crash-scale"
	workers  = "workers"
	template = "worker"
	// recoverBound is how long the simulated cluster-autoscaler keeps retrying after a crash
	// before the run counts as not converged; a healthy recovery takes about a second (several
	// on a loaded machine).
	recoverBound = 30 * time.Second
)

// scaleWorld is the autoscaler-provider's tenant: one MachineDeployment (min 0, max 5) driven
// by the simulated Cluster API/CAPK/KubeVirt, with tenant Nodes.
type scaleWorld struct {
	t     *testing.T
	scope infra.Scope
	group string
}

// TestAutoscalerProviderCrash kills the autoscaler-provider after each of its API writes (the
// deletion marks on Machines, the /scale writes) in IncreaseSize, DeleteNodes and
// DecreaseTargetSize, restarts it and lets a simulated cluster-autoscaler carry on: the group
// ends at exactly the intended size (no double scale), the intended Machines are gone and no
// Machine keeps a deletion mark.
func TestAutoscalerProviderCrash(t *testing.T) {
	// The three components' scenarios share nothing but the simulator and run side by side.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Management.Client
	md := capi.NewMachineDeployment(scaleNS, workers, cluster, template, 1)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "5"}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNS}},
		capi.NewCluster(scaleNS, cluster),
		capi.NewKubevirtMachineTemplate(scaleNS, template, cluster, 2, "3Gi"),
		md,
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	w := &scaleWorld{t: t, scope: infra.Scope{Namespace: scaleNS, ClusterName: cluster}, group: autoscaler.GroupID(scaleNS, workers)}
	if err := w.settle(ctx, 1); err != nil {
		t.Fatal(err)
	}

	t.Run("NodeGroupIncreaseSize", func(t *testing.T) {
		crashAtEveryStep(t, "autoscaler-provider", "NodeGroupIncreaseSize", func(t *testing.T, n int) crashRun {
			w.prepare(t, 1, false)
			return w.run(1, 2, func(ctx context.Context, p *autoscaler.Provider) error {
				_, err := p.NodeGroupIncreaseSize(ctx, &protos.NodeGroupIncreaseSizeRequest{Id: w.group, Delta: 1})
				return err
			}, w.caIncrease(2), nil)
		})
	})
	t.Run("NodeGroupDecreaseTargetSize", func(t *testing.T) {
		crashAtEveryStep(t, "autoscaler-provider", "NodeGroupDecreaseTargetSize", func(t *testing.T, n int) crashRun {
			w.prepare(t, 2, true)
			stuck := w.newestMachines(t, 1)[0]
			return w.run(1, 1, func(ctx context.Context, p *autoscaler.Provider) error {
				_, err := p.NodeGroupDecreaseTargetSize(ctx, &protos.NodeGroupDecreaseTargetSizeRequest{Id: w.group, Delta: -1})
				return err
			}, w.caDecrease(1), []string{stuck.Name})
		})
	})
	// Two nodes in one call: the crash points include the one between the two marks.
	t.Run("NodeGroupDeleteNodes", func(t *testing.T) {
		crashAtEveryStep(t, "autoscaler-provider", "NodeGroupDeleteNodes (2 of 3)", func(t *testing.T, n int) crashRun {
			w.prepare(t, 3, false)
			var nodes []*protos.ExternalGrpcNode
			var gone []string
			for _, m := range w.newestMachines(t, 2) {
				nodes = append(nodes, nodeOf(m))
				gone = append(gone, m.Name)
			}
			del := func(ctx context.Context, p *autoscaler.Provider) error {
				_, err := p.NodeGroupDeleteNodes(ctx, &protos.NodeGroupDeleteNodesRequest{Id: w.group, Nodes: nodes})
				return err
			}
			return w.run(3, 1, del, w.caDelete(gone, del), gone)
		})
	})
	// Issue 21: an earlier call took its replica off and the MachineSet controller has not
	// acted yet (held here by pausing the Cluster). The victim's Machine sorts first by name,
	// so once the controller acts it deletes that one for the earlier call's replica. A crash
	// between the victim's mark and its /scale write then leaves the earlier call's Machine
	// marked with no replica for it, and nobody names it again: the provider's next loops
	// must find the orphaned mark (Refresh, its clock moved past orphanAfter).
	t.Run("NodeGroupDeleteNodes after an earlier call", func(t *testing.T) {
		crashAtEveryStep(t, "autoscaler-provider", "NodeGroupDeleteNodes (1 of 3, an earlier call's surplus pending)", func(t *testing.T, n int) crashRun {
			w.prepare(t, 3, false)
			pair := w.newestMachines(t, 2)
			sort.Slice(pair, func(i, j int) bool { return pair[i].Name < pair[j].Name })
			victim, earlier := pair[0], pair[1]
			if err := w.pauseCluster(true); err != nil {
				t.Fatal(err)
			}
			if err := w.deleteOnce(earlier); err != nil {
				t.Fatal(err)
			}
			del := func(ctx context.Context, p *autoscaler.Provider) error {
				_, err := p.NodeGroupDeleteNodes(ctx, &protos.NodeGroupDeleteNodesRequest{Id: w.group, Nodes: []*protos.ExternalGrpcNode{nodeOf(victim)}})
				return err
			}
			run := w.run(3, 1, del, w.caDelete([]string{victim.Name}, del), []string{victim.Name, earlier.Name})
			// Recovery: the Cluster is unpaused (the MachineSet controller catches up), and
			// cluster-autoscaler's loops begin with Refresh on a provider whose clock says the
			// marks are old.
			ca := w.caDelete([]string{victim.Name}, del)
			run.recover = func(ctx context.Context, sw *Switch) error {
				if err := w.pauseCluster(false); err != nil {
					return err
				}
				p, stop, err := w.startProviderAt(sw, func() time.Time { return time.Now().Add(time.Hour) })
				if err != nil {
					return err
				}
				defer stop()
				bounded, cancel := context.WithTimeout(ctx, recoverBound)
				defer cancel()
				if err := ca(bounded, p); err != nil {
					return err
				}
				return retry(bounded, func(ctx context.Context) error {
					if _, err := p.Refresh(ctx, &protos.RefreshRequest{}); err != nil {
						return err
					}
					if missing, leaked := w.compare(ctx, 1, []string{victim.Name, earlier.Name}); len(missing)+len(leaked) > 0 {
						return fmt.Errorf("missing %v, leaked %v", missing, leaked)
					}
					return nil
				})
			}
			cleanup := run.cleanup
			run.cleanup = func(ctx context.Context) error {
				if err := w.pauseCluster(false); err != nil {
					return err
				}
				return cleanup(ctx)
			}
			return run
		})
	})
}

func nodeOf(m clusterv1.Machine) *protos.ExternalGrpcNode {
	return &protos.ExternalGrpcNode{Name: strings.TrimPrefix(m.Spec.ProviderID, infra.ProviderIDPrefix), ProviderID: m.Spec.ProviderID}
}

// pauseCluster sets the Cluster's spec.paused: Cluster API's controllers (the simulated ones
// too) then leave its MachineDeployments, MachineSets and Machines alone.
func (w *scaleWorld) pauseCluster(paused bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	return clientretry.RetryOnConflict(clientretry.DefaultRetry, func() error {
		c := &clusterv1.Cluster{}
		if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: scaleNS, Name: cluster}, c); err != nil {
			return err
		}
		c.Spec.Paused = &paused
		return env.Management.Client.Update(ctx, c)
	})
}

// deleteOnce has a healthy provider remove m's node, as an earlier cluster-autoscaler call.
func (w *scaleWorld) deleteOnce(m clusterv1.Machine) error {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	sw := NewSwitch(0, nil)
	defer sw.Exit()
	p, stop, err := w.startProvider(sw)
	if err != nil {
		return err
	}
	defer stop()
	_, err = p.NodeGroupDeleteNodes(ctx, &protos.NodeGroupDeleteNodesRequest{Id: w.group, Nodes: []*protos.ExternalGrpcNode{nodeOf(m)}})
	return err
}

// startProvider runs the provider in-process with every request to either cluster passing
// through sw; stop cancels it as a killed process would end.
func (w *scaleWorld) startProvider(sw *Switch) (*autoscaler.Provider, context.CancelFunc, error) {
	return w.startProviderAt(sw, nil)
}

// startProviderAt is startProvider with the provider's clock (nil: time.Now).
func (w *scaleWorld) startProviderAt(sw *Switch, clock func() time.Time) (*autoscaler.Provider, context.CancelFunc, error) {
	ic, err := infra.NewWithOptions(sw.Config(env.Management.Config), w.scope, autoscaler.InfraOptions())
	if err != nil {
		return nil, nil, err
	}
	nodes, err := autoscaler.NewNodeCache(sw.Config(env.Tenant.Config))
	if err != nil {
		return nil, nil, err
	}
	pctx, cancel := context.WithCancel(context.Background())
	p, err := autoscaler.New(pctx, autoscaler.Config{Infra: ic, Nodes: nodes, CacheWait: 5 * time.Second, Clock: clock})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := p.Start(pctx); err != nil {
		cancel()
		return nil, nil, err
	}
	return p, cancel, nil
}

// run is the crashRun of one provider call: the victim makes it once; recovery is what
// cluster-autoscaler does on its next loops against a restarted provider (ca). The group must
// end at want replicas with that many running Machines, gone (if set) gone. Cleanup brings the
// group back to from replicas.
func (w *scaleWorld) run(from, want int32, call func(context.Context, *autoscaler.Provider) error,
	ca func(context.Context, *autoscaler.Provider) error, gone []string) crashRun {
	return crashRun{
		victim: func(ctx context.Context, sw *Switch) error {
			p, stop, err := w.startProvider(sw)
			if err != nil {
				return err
			}
			defer stop()
			return untilKilled(ctx, sw, func(ctx context.Context) error { return call(ctx, p) })
		},
		recover: func(ctx context.Context, sw *Switch) error {
			p, stop, err := w.startProvider(sw)
			if err != nil {
				return err
			}
			defer stop()
			bounded, cancel := context.WithTimeout(ctx, recoverBound)
			defer cancel()
			return ca(bounded, p)
		},
		check: func(ctx context.Context) (missing, leaked []string) { return w.compare(ctx, want, gone) },
		cleanup: func(ctx context.Context) error {
			// As an operator would after a failed run: marks off, size back.
			if err := w.unmarkAll(ctx); err != nil {
				return err
			}
			if err := w.setReplicas(ctx, from); err != nil {
				return err
			}
			return w.settle(ctx, from)
		},
	}
}

// caIncrease is cluster-autoscaler after a failed scale-up: on each loop it reads the target
// size and asks only for what is still missing, so a write that landed is never repeated.
func (w *scaleWorld) caIncrease(want int32) func(context.Context, *autoscaler.Provider) error {
	return func(ctx context.Context, p *autoscaler.Provider) error {
		return retry(ctx, func(ctx context.Context) error {
			ts, err := p.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: w.group})
			if err != nil {
				return err
			}
			if ts.GetTargetSize() >= want {
				return nil
			}
			_, err = p.NodeGroupIncreaseSize(ctx, &protos.NodeGroupIncreaseSizeRequest{Id: w.group, Delta: want - ts.GetTargetSize()})
			if err == nil {
				err = errors.New("scaled up; checking the target size again")
			}
			return err
		})
	}
}

// caDecrease is cluster-autoscaler removing a long-unregistered node's request again on its
// next loops while the target size is above want.
func (w *scaleWorld) caDecrease(want int32) func(context.Context, *autoscaler.Provider) error {
	return func(ctx context.Context, p *autoscaler.Provider) error {
		return retry(ctx, func(ctx context.Context) error {
			ts, err := p.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: w.group})
			if err != nil {
				return err
			}
			if ts.GetTargetSize() <= want {
				return nil
			}
			_, err = p.NodeGroupDecreaseTargetSize(ctx, &protos.NodeGroupDecreaseTargetSizeRequest{Id: w.group, Delta: want - ts.GetTargetSize()})
			if err == nil {
				err = errors.New("decreased; checking the target size again")
			}
			return err
		})
	}
}

// caDelete is cluster-autoscaler's scale-down after a failed DeleteNodes: the node is still
// there and still unneeded, so it is deleted again, until its Machine is on its way out.
func (w *scaleWorld) caDelete(machines []string, del func(context.Context, *autoscaler.Provider) error) func(context.Context, *autoscaler.Provider) error {
	return func(ctx context.Context, p *autoscaler.Provider) error {
		return retry(ctx, func(ctx context.Context) error {
			var left []string
			for _, name := range machines {
				m := &clusterv1.Machine{}
				err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: scaleNS, Name: name}, m)
				if client.IgnoreNotFound(err) != nil {
					return err
				}
				if err == nil && m.DeletionTimestamp.IsZero() {
					left = append(left, name)
				}
			}
			if len(left) == 0 {
				return nil
			}
			if err := del(ctx, p); err != nil {
				return err
			}
			return fmt.Errorf("Machines %v still there after DeleteNodes", left)
		})
	}
}

// prepare scales the group to n (with the admin client, as an operator would) and waits until
// it is settled; with stuck, the newest Machine's node never joins.
func (w *scaleWorld) prepare(t *testing.T, n int32, stuck bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	if stuck {
		// Settled one below first, so the Machine the scale-up makes is the stuck one.
		if err := w.setReplicas(ctx, n-1); err != nil {
			t.Fatal(err)
		}
		if err := w.settle(ctx, n-1); err != nil {
			t.Fatal(err)
		}
		sims.Faults.FailNext(capi.FaultMachineNodeJoin, 1)
	}
	if err := w.setReplicas(ctx, n); err != nil {
		t.Fatal(err)
	}
	var err error
	if stuck {
		err = eventually(ctx, runTimeout, func(ctx context.Context) error {
			ms, err := w.machines(ctx)
			if err != nil {
				return err
			}
			joined, provisioned := 0, 0
			for _, m := range ms {
				if m.Status.NodeRef.IsDefined() {
					joined++
				} else if m.Spec.ProviderID != "" {
					provisioned++
				}
			}
			if joined != int(n)-1 || provisioned != 1 {
				return fmt.Errorf("%d joined and %d provisioned-without-node Machines", joined, provisioned)
			}
			return nil
		})
	} else {
		err = w.settle(ctx, n)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (w *scaleWorld) setReplicas(ctx context.Context, n int32) error {
	return clientretry.RetryOnConflict(clientretry.DefaultRetry, func() error {
		md := &clusterv1.MachineDeployment{}
		if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: scaleNS, Name: workers}, md); err != nil {
			return err
		}
		md.Spec.Replicas = &n
		return env.Management.Client.Update(ctx, md)
	})
}

// unmarkAll removes the deletion marks from every Machine of the group.
func (w *scaleWorld) unmarkAll(ctx context.Context) error {
	ms, err := w.machines(ctx)
	if err != nil {
		return err
	}
	patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:null,%q:null}}}`,
		autoscaler.AnnotationDeleteMachine, autoscaler.AnnotationScaleDownRequested)))
	for i := range ms {
		if err := env.Management.Client.Patch(ctx, &ms[i], patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("unmarking Machine %s: %w", ms[i].Name, err)
		}
	}
	return nil
}

// machines are the group's Machines.
func (w *scaleWorld) machines(ctx context.Context) ([]clusterv1.Machine, error) {
	var list clusterv1.MachineList
	if err := env.Management.Client.List(ctx, &list, client.InNamespace(scaleNS),
		client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: workers}); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// newestMachines returns the k newest Machines of the group, all provisioned.
func (w *scaleWorld) newestMachines(t *testing.T, k int) []clusterv1.Machine {
	t.Helper()
	ms, err := w.machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(ms, func(i, j int) bool {
		ti, tj := ms[i].CreationTimestamp, ms[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return ms[i].Name > ms[j].Name
	})
	if len(ms) < k {
		t.Fatalf("%d Machines, want at least %d", len(ms), k)
	}
	for _, m := range ms[:k] {
		if m.Spec.ProviderID == "" {
			t.Fatalf("Machine %s not provisioned", m.Name)
		}
	}
	return ms[:k]
}

// settle waits until compare finds the group at n with nothing extra.
func (w *scaleWorld) settle(ctx context.Context, n int32) error {
	return eventually(ctx, runTimeout, func(ctx context.Context) error {
		missing, leaked := w.compare(ctx, n, nil)
		if len(missing)+len(leaked) > 0 {
			return fmt.Errorf("group not at %d: missing %v, extra %v", n, missing, leaked)
		}
		return nil
	})
}

// compare checks the group against want: replicas exactly want (more or fewer is a lost or
// doubled scale), want Machines running with a tenant Node, none deleting, gone absent; every
// deletion mark left on a Machine is leaked.
func (w *scaleWorld) compare(ctx context.Context, want int32, gone []string) (missing, leaked []string) {
	md := &clusterv1.MachineDeployment{}
	if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: scaleNS, Name: workers}, md); err != nil {
		return []string{err.Error()}, nil
	}
	if r := *md.Spec.Replicas; r != want {
		missing = append(missing, fmt.Sprintf("replicas %d (want exactly %d)", r, want))
	}
	ms, err := w.machines(ctx)
	if err != nil {
		return append(missing, err.Error()), nil
	}
	running := 0
	for _, m := range ms {
		if slices.Contains(gone, m.Name) {
			missing = append(missing, fmt.Sprintf("Machine %s gone (deleting: %v)", m.Name, !m.DeletionTimestamp.IsZero()))
		}
		if !m.DeletionTimestamp.IsZero() {
			continue
		}
		if m.Status.NodeRef.IsDefined() && m.Status.Phase == string(clusterv1.MachinePhaseRunning) {
			running++
		}
		for _, a := range []string{autoscaler.AnnotationDeleteMachine, autoscaler.AnnotationScaleDownRequested} {
			if _, ok := m.Annotations[a]; ok {
				leaked = append(leaked, fmt.Sprintf("annotation %s on Machine %s", a, m.Name))
			}
		}
	}
	if running != int(want) || len(ms) != int(want) {
		missing = append(missing, fmt.Sprintf("%d running Machines of %d (want %d)", running, len(ms), want))
	}
	return missing, leaked
}
