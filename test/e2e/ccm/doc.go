// Package ccm runs the real tenantcloud ccm binary between a real management and tenant
// apiserver (test/harness), with the real MetalLB controller giving infra Services addresses
// and the KubeVirt and Cluster API simulators turning MachineDeployments into running VMs and
// tenant Nodes. Everything is observed from outside, as an operator or tenant would.
package ccm
