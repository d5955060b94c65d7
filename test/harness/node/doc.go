// Package node runs real nodes for the harness: per node a real kubelet, its own containerd
// (Debian's 1.6, runc, the CNI bridge and host-local plugins) and a real kube-proxy. A tenant
// node registers with the harness's tenant apiserver under --cloud-provider=external and
// stands for one simulated KubeVirt VM: it carries the VM's providerID and address, so the
// real ccm initialises it, and it sees exactly the disks hot-plugged into that VM. A
// management node (Options.Cluster = env.Management) registers with the management apiserver
// and runs the management chart's pods; besides its own apiserver it serves the tenant
// apiserver at its advertised endpoint (harness.Cluster.AdvertisedEndpoint), where a tenant
// kubeconfig Secret points them.
//
// A node is a machine of its own as far as this host allows:
//   - its own network namespace (/run/netns/tc-<pid>-<name>) with the VM's address on a veth,
//     its own CNI bridge, pod addresses and iptables rules, so kube-proxies of several nodes
//     (and of other test binaries) never rewrite each other's chains, and no packet of a node
//     can leave this machine: the namespace has no route out;
//   - its own mount namespace, a slave of the host's, where /dev/disk/by-id is the VM's
//     device directory (test/sim/disks), /var/lib/kubelet is the node's own kubelet directory
//     (so a DaemonSet's hostPaths are the same on every node) and the kubelet's and
//     containerd's mounts stay;
//   - its own cgroup subtree (/tenantcloud-<pid>-<name> in every v1 hierarchy) holding
//     containerd, its shims, the kubelet's pods (cgroupRoot) and the node's daemons, so Stop
//     ends everything the node ran, and a later run reaps what a killed test left.
//
// The tenant apiserver listens on the host's loopback. Inside a node's network namespace the
// harness serves the same address (127.0.0.1:<port>), so the node's daemons use the tenant
// kubeconfig unchanged, and the address the apiserver advertises as the kubernetes Service's
// endpoint (the host's primary address, put on the node's own loopback so nothing is sent
// towards the host's real interface): pods reach the apiserver through the Service as in a
// cluster, kube-proxy's DNAT included. Both are forwarded to the apiserver by the test process.
//
// Every node answers its pods' DNS at ClusterDNSIP for <service>.<namespace>.svc.cluster.local
// (the Service's ClusterIP in the node's cluster): what kube-dns would answer for Services,
// without CoreDNS (dns.go).
//
// Differences from a cluster node, each forced by this machine: the apiserver cannot reach
// the kubelet (no logs/exec/port-forward through the API: there is no route into a node's
// namespace); pods on different nodes cannot reach each other (no pod network between
// nodes), so a Service answers only on the node its endpoints run on; the node shares the
// host's kernel, /dev and loop devices; DNS knows Services only.
package node
