// Package install installs tenantcloud's two Helm charts for real on the harness, as an
// operator does: the images `make images` built (bin/images) pushed to a loopback registry,
// the management chart (deploy/charts/tenantcloud) with `helm install` into the tenant's infra
// namespace of the management cluster, its pods — ccm, csi-controller with the real CSI
// sidecars, autoscaler-provider, cluster-autoscaler — running on a real management node
// (test/harness/node, Options.Cluster = env.Management), and the tenant chart
// (deploy/charts/tenantcloud-tenant) into the tenant's kube-system, its csi-node DaemonSet on
// the real tenant nodes. The values are the operator's example files in deploy/examples plus
// what only the installation knows (cluster name, image references, the management node).
//
// Use:
//
//	images, _ := install.PushImages(ctx, env, dir)          // registry + bin/images pushed
//	// start the nodes with Registries: []string{images.Registry.Addr}
//	rel, _ := install.Install(ctx, env, sim, install.Options{ClusterName: "alpha", Images: images, ManagementNode: mgmt.Name})
//	defer rel.Uninstall(ctx)
//	// … the stories …
//	counts, err := rel.CheckAudit(rel.Started) // every identity made requests, none refused
//
// On a failure rel.Describe(ctx) is both releases' pods and Events as kubectl would show them
// (the containers' logs are on the nodes: node.Node.ContainerLog).
//
// Install also makes what the chart expects to exist and an operator makes by hand or with
// other tools: the infra objects the grant names (MetalLB IPAddressPools, StorageClasses,
// VolumeSnapshotClass), the tenant kubeconfig Secret Cluster API would create (its server is
// the tenant apiserver's advertised endpoint, reachable from the management node), and the
// autoscaler mTLS Secrets (cert-manager is not available here). It returns once every pod of
// both releases is Running and Ready and runs exactly the digest bin/images/images.txt lists
// for its image.
//
// What the environment must run first (Install checks, and says what is missing): the
// management cluster's kube-scheduler (harness.Env.StartSchedulerFor) and
// kube-controller-manager with at least ManagementControllers, the tenant's kube-scheduler and
// kube-controller-manager (DaemonSets), the harness started with ManagementServiceAccounts
// and TenantServiceAccounts, one real management node and the real tenant nodes.
package install
