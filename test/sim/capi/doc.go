// Package capi simulates the management-cluster controllers that turn Cluster API objects into
// tenant worker nodes: Cluster API core (MachineDeployment → MachineSet → Machine, phases,
// nodeRef, scale-down order, deletion), the KubeVirt infrastructure provider CAPK
// (KubevirtMachine → VirtualMachine, providerID, template capacity) and the kubelet of each
// worker VM (a Node in the tenant apiserver). VMs themselves are run by package kubevirt.
// See ../kubevirt/NOTES.md for what is and is not faithful.
package capi
