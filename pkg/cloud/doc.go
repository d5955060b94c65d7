// Package cloud is tenantcloud's k8s.io/cloud-provider implementation: InstancesV2 over the
// tenant's KubeVirt VMs (package instances) and LoadBalancer over MetalLB in the management
// cluster (package loadbalancer), both seeing the infra cluster only through pkg/infra's
// scoped client. The provider is registered with cloudprovider.RegisterCloudProvider by
// cmd/ccm alone (the registry is process-global); this package only offers the factory.
package cloud
