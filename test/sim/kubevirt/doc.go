// Package kubevirt simulates the parts of KubeVirt that act on VirtualMachines and
// VirtualMachineInstances in the management cluster: virt-controller (VM run strategies, VMI
// creation, launcher pods), kube-scheduler and kubelet for those pods, and virt-handler (the
// VMI phases up to Running and back down). It runs as controller-runtime controllers against
// a real kube-apiserver with KubeVirt's CRDs; see NOTES.md for what is and is not faithful.
package kubevirt
