package capi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// AnnotationSimVMI marks tenant Nodes the simulated kubelets registered, with the VMI
// (namespace/name) they run in, so the simulator never touches Nodes it did not create.
const AnnotationSimVMI = "sim.tenantcloud.io/vmi"

// TaintCloudUninitialized is the taint a kubelet started with --cloud-provider=external
// registers with; the cloud controller manager lifts it once it initialized the Node.
const TaintCloudUninitialized = "node.cloudprovider.kubernetes.io/uninitialized"

const kubeletVersion = "v1.36.2"

// kubeletWorkers is how many simulated kubelets act at once; each real guest has its own, so
// it bounds only the simulator's goroutines.
const kubeletWorkers = 100

// kubelet plays the kubelet inside each CAPK worker VM: once the VMI has run for PhaseDelay
// (boot plus kubeadm join) it registers a Node in the tenant cluster, named after the guest's
// hostname, without providerID (CAPK sets it), tainted as the bootstrap provider and, with an
// external cloud provider, the kubelet do; it keeps the Node Ready while the VMI runs and
// Unknown (as the node lifecycle controller reports a silent kubelet) when it does not.
type kubelet struct {
	reconcilerBase
	clock *simmgr.StepClock
	mu    sync.Mutex
	// joined: VMIs whose kubelet registered (it registers once per boot);
	// refused: VMIs whose join was failed by the NodeJoin fault point, for good.
	joined, refused map[types.UID]bool
	nodes           map[types.NamespacedName]string // VMI → node name, for VMIs that are gone
	// real: VMIs whose guest runs a real kubelet (Options.Kubelets took them).
	real map[types.NamespacedName]bool
}

func newKubelet(b reconcilerBase) *kubelet {
	return &kubelet{reconcilerBase: b, clock: simmgr.NewStepClock(), joined: map[types.UID]bool{},
		refused: map[types.UID]bool{}, nodes: map[types.NamespacedName]string{}, real: map[types.NamespacedName]bool{}}
}

func (k *kubelet) setupWithManager(mgr manager.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-tenant-kubelet").
		For(&kubevirtv1.VirtualMachineInstance{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			l := o.GetLabels()
			return l[LabelKubevirtMachineName] != "" && k.opts.wants(l[clusterv1.ClusterNameLabel])
		}))).
		// Every VM runs a kubelet of its own: 100 guests join at once, not 4 at a time.
		WithOptions(controller.Options{MaxConcurrentReconciles: kubeletWorkers}).
		Complete(k)
}

func (k *kubelet) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := k.client.Get(ctx, req.NamespacedName, vmi); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		k.mu.Lock()
		name, ok := k.nodes[req.NamespacedName]
		delete(k.nodes, req.NamespacedName)
		k.mu.Unlock()
		k.clock.Forget(req.NamespacedName)
		if err := k.leave(ctx, req.NamespacedName); err != nil {
			return ctrl.Result{}, err
		}
		if ok {
			return ctrl.Result{}, k.markUnknown(ctx, name, req.NamespacedName)
		}
		return ctrl.Result{}, nil
	}
	nodeName := hostname(vmi)
	k.mu.Lock()
	k.nodes[req.NamespacedName] = nodeName
	joined, refused := k.joined[vmi.UID], k.refused[vmi.UID]
	k.mu.Unlock()

	if !guestUp(vmi) {
		if err := k.leave(ctx, req.NamespacedName); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, k.markUnknown(ctx, nodeName, req.NamespacedName)
	}
	k.mu.Lock()
	real := k.real[req.NamespacedName]
	k.mu.Unlock()
	if real {
		return ctrl.Result{}, nil // its real kubelet posts the Node's status
	}
	if refused {
		return ctrl.Result{}, nil
	}
	if !joined {
		if left := k.clock.Remaining(req.NamespacedName, vmi.UID, "join", k.opts.PhaseDelay); left > 0 {
			return ctrl.Result{RequeueAfter: left}, nil
		}
		if k.opts.Faults.Stalled(FaultMachineNodeJoin) {
			return ctrl.Result{RequeueAfter: k.opts.poll()}, nil
		}
		if err := k.opts.Faults.Check(ctx, FaultMachineNodeJoin); err != nil {
			var fe *fault.Error
			if !errors.As(err, &fe) {
				return ctrl.Result{}, err
			}
			ctrl.LoggerFrom(ctx).Info("Kubelet will never join", "vmi", req.NamespacedName, "error", err)
			k.mu.Lock()
			k.refused[vmi.UID] = true
			k.mu.Unlock()
			return ctrl.Result{}, nil
		}
		if k.opts.Kubelets != nil {
			took, err := k.opts.Kubelets.Join(ctx, vmi, nodeName)
			if err != nil {
				return ctrl.Result{}, fmt.Errorf("starting a real kubelet for VMI %s: %w", req.NamespacedName, err)
			}
			if took {
				k.mu.Lock()
				k.joined[vmi.UID], k.real[req.NamespacedName] = true, true
				k.mu.Unlock()
				return ctrl.Result{}, nil
			}
		}
		if err := k.register(ctx, vmi, nodeName); err != nil {
			return ctrl.Result{}, err
		}
		k.mu.Lock()
		k.joined[vmi.UID] = true
		k.mu.Unlock()
	}
	if err := k.postStatus(ctx, vmi, nodeName); err != nil {
		return ctrl.Result{}, err
	}
	if err := k.renewLease(ctx, vmi, nodeName); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: leaseRenewInterval}, nil
}

// The kubelet's node Lease: renewed every 10 s, valid for 40 s (its defaults). The tenant's
// node lifecycle controller, when one runs, marks a Node whose Lease lapses NotReady.
const (
	leaseRenewInterval = 10 * time.Second
	leaseDuration      = int32(40)
)

// renewLease renews the Node's Lease in kube-node-lease, as the kubelet does while the guest
// runs, owned by the Node so it goes with it.
func (k *kubelet) renewLease(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, name string) error {
	node := &corev1.Node{}
	if err := k.opts.Tenant.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return client.IgnoreNotFound(err) // deleted by Cluster API
	}
	if node.Annotations[AnnotationSimVMI] != vmi.Namespace+"/"+vmi.Name {
		return nil
	}
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{}
	err := k.opts.Tenant.Get(ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: name}, lease)
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: name, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: ptrTo(leaseDuration), RenewTime: &now},
		}
		if err := k.opts.Tenant.Create(ctx, lease); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the Lease of tenant node %s: %w", name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the Lease of tenant node %s: %w", name, err)
	}
	lease.Spec.RenewTime = &now
	if err := k.opts.Tenant.Update(ctx, lease); err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("renewing the Lease of tenant node %s: %w", name, err)
	}
	return nil
}

// leave stops the real kubelet of a VMI whose guest is gone or down, if it has one.
func (k *kubelet) leave(ctx context.Context, vmi types.NamespacedName) error {
	k.mu.Lock()
	real := k.real[vmi]
	k.mu.Unlock()
	if !real {
		return nil
	}
	if err := k.opts.Kubelets.Leave(ctx, vmi); err != nil {
		return fmt.Errorf("stopping the real kubelet of VMI %s: %w", vmi, err)
	}
	k.mu.Lock()
	delete(k.real, vmi)
	k.mu.Unlock()
	return nil
}

// guestUp reports whether the guest (and so its kubelet) runs: VMI Running, Ready, not being
// shut down.
func guestUp(vmi *kubevirtv1.VirtualMachineInstance) bool {
	return vmi.DeletionTimestamp == nil && readyAddress(vmi) != "" && vmi.Status.Phase == kubevirtv1.Running
}

// hostname is the guest's hostname, which the kubelet registers as the Node name.
func hostname(vmi *kubevirtv1.VirtualMachineInstance) string {
	if vmi.Spec.Hostname != "" {
		return vmi.Spec.Hostname
	}
	return vmi.Name
}

// register creates the Node, or adopts one left from an earlier boot of the same VM.
func (k *kubelet) register(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, name string) error {
	taints := []corev1.Taint{clusterv1.NodeUninitializedTaint}
	if k.opts.ExternalCloudProvider {
		taints = append(taints, corev1.Taint{Key: TaintCloudUninitialized, Value: "true", Effect: corev1.TaintEffectNoSchedule})
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
			},
			Annotations: map[string]string{AnnotationSimVMI: vmi.Namespace + "/" + vmi.Name},
		},
		Spec: corev1.NodeSpec{Taints: taints},
	}
	if err := k.opts.Tenant.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("registering tenant node %s: %w", name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Tenant node registered", "node", name)
	return nil
}

// postStatus is the kubelet's node status: Ready, capacity of the guest, its addresses; and
// the node lifecycle controller lifting the not-ready taint admission added at creation.
func (k *kubelet) postStatus(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, name string) error {
	node := &corev1.Node{}
	if err := k.opts.Tenant.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return client.IgnoreNotFound(err) // deleted by Cluster API: a kubelet does not re-register
	}
	if node.Annotations[AnnotationSimVMI] != vmi.Namespace+"/"+vmi.Name {
		return nil
	}
	capacity := guestCapacity(&vmi.Spec)
	var addrs []corev1.NodeAddress
	for _, ip := range vmi.Status.Interfaces[0].IPs {
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	err := simmgr.Update(ctx, k.opts.Tenant, k.opts.Tenant, node, true, func(n *corev1.Node) bool {
		before := n.Status.DeepCopy()
		n.Status.Capacity, n.Status.Allocatable = capacity, capacity.DeepCopy()
		n.Status.Addresses = addrs
		n.Status.NodeInfo = corev1.NodeSystemInfo{
			MachineID: string(vmi.UID), SystemUUID: string(vmi.UID), BootID: string(vmi.UID),
			KernelVersion: "6.8.0-60-generic", OSImage: "Ubuntu 24.04 LTS", ContainerRuntimeVersion: "containerd://2.1.0",
			KubeletVersion: kubeletVersion, OperatingSystem: "linux", Architecture: "amd64",
		}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = 10250
		setNodeConditions(n, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status")
		return !equality.Semantic.DeepEqual(before, &n.Status)
	})
	if err != nil {
		return fmt.Errorf("posting status of tenant node %s: %w", name, err)
	}
	err = simmgr.Update(ctx, k.opts.Tenant, k.opts.Tenant, node, false, func(n *corev1.Node) bool {
		r1 := removeTaint(n, corev1.TaintNodeNotReady)
		r2 := removeTaint(n, corev1.TaintNodeUnreachable)
		return r1 || r2
	})
	return client.IgnoreNotFound(err)
}

// markUnknown is the node lifecycle controller noticing a kubelet stopped posting: Ready and
// the pressure conditions go Unknown and the unreachable taints are added.
func (k *kubelet) markUnknown(ctx context.Context, name string, vmi types.NamespacedName) error {
	node := &corev1.Node{}
	if err := k.opts.Tenant.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return client.IgnoreNotFound(err)
	}
	if node.Annotations[AnnotationSimVMI] != vmi.Namespace+"/"+vmi.Name {
		return nil
	}
	err := simmgr.Update(ctx, k.opts.Tenant, k.opts.Tenant, node, true, func(n *corev1.Node) bool {
		before := n.Status.DeepCopy()
		setNodeConditions(n, corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.")
		return !equality.Semantic.DeepEqual(before, &n.Status)
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("marking tenant node %s unknown: %w", name, err)
	}
	err = simmgr.Update(ctx, k.opts.Tenant, k.opts.Tenant, node, false, func(n *corev1.Node) bool {
		changed := false
		for _, effect := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
			if !hasTaint(n, corev1.TaintNodeUnreachable, effect) {
				n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: effect})
				changed = true
			}
		}
		return changed
	})
	return client.IgnoreNotFound(err)
}

func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

// setNodeConditions sets Ready to status and the pressure conditions to False (or Unknown
// with it), keeping transition times of unchanged conditions.
func setNodeConditions(n *corev1.Node, ready corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	pressure := corev1.ConditionFalse
	if ready == corev1.ConditionUnknown {
		pressure = corev1.ConditionUnknown
	}
	want := []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: ready, Reason: reason, Message: msg},
		{Type: corev1.NodeMemoryPressure, Status: pressure, Reason: "KubeletHasSufficientMemory"},
		{Type: corev1.NodeDiskPressure, Status: pressure, Reason: "KubeletHasNoDiskPressure"},
		{Type: corev1.NodePIDPressure, Status: pressure, Reason: "KubeletHasSufficientPID"},
	}
	if ready == corev1.ConditionUnknown {
		for i := 1; i < len(want); i++ {
			want[i].Reason, want[i].Message = reason, msg
		}
	}
	for _, w := range want {
		found := false
		for i := range n.Status.Conditions {
			c := &n.Status.Conditions[i]
			if c.Type != w.Type {
				continue
			}
			found = true
			if c.Status != w.Status || c.Reason != w.Reason {
				w.LastTransitionTime, w.LastHeartbeatTime = now, now
				*c = w
			}
		}
		if !found {
			w.LastTransitionTime, w.LastHeartbeatTime = now, now
			n.Status.Conditions = append(n.Status.Conditions, w)
		}
	}
}
