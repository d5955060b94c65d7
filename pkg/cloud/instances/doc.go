// Package instances implements cloudprovider.InstancesV2 over KubeVirt VMs: a tenant Node is
// the VM its providerID names (kubevirt://<vm>), or, before the providerID is set, the VM of
// the node's name. Every lookup goes through the scoped infra client, so a providerID or node
// name that names another cluster's VM finds nothing, exactly like a VM that does not exist.
package instances
