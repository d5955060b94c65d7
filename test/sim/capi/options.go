package capi

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

// Fault points the simulator consults (see package fault).
const (
	// FaultMachineProvision is passed before CAPK creates a Machine's VM. Stall: the VM is not
	// created (Machine stays Provisioning). FailNext: the KubevirtMachine, then the Machine,
	// report a terminal failure (failureReason CreateError) and no VM is ever created.
	FaultMachineProvision = "machine/Provision"
	// FaultMachineNodeJoin is passed before a running VM's kubelet registers its tenant Node.
	// Stall: no Node joins until Release (Machine stays Provisioned, without nodeRef).
	// FailNext: that VM's kubelet never joins at all.
	FaultMachineNodeJoin = "machine/NodeJoin"
	// FaultMachineDelete is passed before a deleting Machine tears down its infrastructure.
	// Stall: the Machine stays in phase Deleting. FailNext: a transient error, retried.
	FaultMachineDelete = "machine/Delete"
)

// Options configures the simulated Cluster API core controllers and CAPK.
type Options struct {
	// PhaseDelay is how long bootstrap data and a guest's kubeadm join take.
	PhaseDelay time.Duration
	// Faults, if set, is consulted at the FaultMachine* points.
	Faults *fault.Injector
	// Tenant is the workload cluster's API server, where Nodes join.
	Tenant client.Client
	// ExternalCloudProvider makes kubelets register with the
	// node.cloudprovider.kubernetes.io/uninitialized taint (kubelet --cloud-provider=external),
	// which only the cloud controller manager lifts.
	ExternalCloudProvider bool
	// ClusterName, if set, limits the simulator to Cluster API objects of that cluster, so
	// several simulators (one per tenant apiserver) can share a management cluster.
	ClusterName string
	// LegacyFailedPhase also sets Machine status.phase=Failed on a terminal failure, as Cluster
	// API did before the v1beta2 API. Cluster API v1.14 never sets Failed: the failure is only
	// in status.deprecated.v1beta1.failureReason/failureMessage and the conditions.
	LegacyFailedPhase bool
	// Kubelets, if set, is offered every worker VM whose guest came up (once per boot): a VM
	// it takes gets a real kubelet that registers the Node itself, and the simulated kubelet
	// leaves that VM alone. VMs it declines get the simulated kubelet.
	Kubelets Kubelets
}

// Kubelets runs real kubelets for some worker VMs (test/harness/node), standing for the
// kubelet a guest's kubeadm join starts.
type Kubelets interface {
	// Join starts a real kubelet for the VMI's guest, registering as nodeName, and reports
	// whether it did (false: the simulated kubelet joins instead). An error is retried.
	Join(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, nodeName string) (bool, error)
	// Leave stops the real kubelet of a VMI Join took, once the VMI is gone or its guest down.
	Leave(ctx context.Context, vmi types.NamespacedName) error
}

// poll is how often a reconciler looks again at what it cannot watch: the tenant apiserver
// and stalled fault points.
func (o Options) poll() time.Duration { return max(o.PhaseDelay, 50*time.Millisecond) }

// wants reports whether obj belongs to the cluster this simulator handles.
func (o Options) wants(clusterName string) bool {
	return o.ClusterName == "" || clusterName == o.ClusterName
}

// CAPK kinds. CAPK has no Go types in this module; they are handled as unstructured objects.
const (
	infraGroup          = "infrastructure.cluster.x-k8s.io"
	kindKubevirtMachine = "KubevirtMachine"
	kindKubevirtMT      = "KubevirtMachineTemplate"
)

// gvks are the CAPK versions the API server serves, resolved at Setup like Cluster API does
// from the CRDs.
type gvks struct {
	machine, template schema.GroupVersionKind
}

func (g gvks) newMachine() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(g.machine)
	return u
}

func (g gvks) newTemplate() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(g.template)
	return u
}

// Setup registers the MachineDeployment, MachineSet and Machine controllers (Cluster API),
// the KubevirtMachine and KubevirtMachineTemplate controllers (CAPK) and the tenant kubelets
// with mgr. VMs are left to the KubeVirt simulator (package kubevirt), which must run on the
// same management cluster.
func Setup(ctx context.Context, mgr manager.Manager, opts Options) error {
	if opts.Tenant == nil {
		return fmt.Errorf("capi sim: Options.Tenant is required")
	}
	var g gvks
	for kind, dst := range map[string]*schema.GroupVersionKind{kindKubevirtMachine: &g.machine, kindKubevirtMT: &g.template} {
		m, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: infraGroup, Kind: kind})
		if err != nil {
			return fmt.Errorf("capi sim: resolving %s (is the CAPK CRD installed?): %w", kind, err)
		}
		*dst = m.GroupVersionKind
	}
	base := reconcilerBase{client: mgr.GetClient(), reader: mgr.GetAPIReader(), opts: opts, gvk: g}
	for name, setup := range map[string]func(manager.Manager) error{
		"MachineDeployment":       (&mdReconciler{base}).setupWithManager,
		"MachineSet":              (&msReconciler{base}).setupWithManager,
		"Machine":                 (&machineReconciler{reconcilerBase: base}).setupWithManager,
		"KubevirtMachine":         (&kvmReconciler{base}).setupWithManager,
		"KubevirtMachineTemplate": (&templateReconciler{base}).setupWithManager,
		"kubelet":                 newKubelet(base).setupWithManager,
	} {
		if err := setup(mgr); err != nil {
			return fmt.Errorf("capi sim: registering %s controller: %w", name, err)
		}
	}
	return nil
}

// reconcilerBase is what every controller of this simulator shares.
type reconcilerBase struct {
	client client.Client
	// reader bypasses the cache where a stale list would make a controller create or delete
	// twice (Cluster API uses expectations and cache barriers for that).
	reader client.Reader
	opts   Options
	gvk    gvks
}
