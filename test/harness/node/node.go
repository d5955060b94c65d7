package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// kubeletDir is the kubelet's root directory inside every node.
const kubeletDir = "/var/lib/kubelet"

// Options describe one node: the VM it stands for and its pod network.
type Options struct {
	// Cluster is the cluster the node joins: nil (or env.Tenant) for a tenant node, standing
	// for a VM; env.Management for a management node, where the management chart's pods run
	// (their Services, the kubernetes Service with ServiceAccount tokens — start the harness
	// with ManagementServiceAccounts — and the tenant apiserver at its AdvertisedEndpoint,
	// the address a tenant kubeconfig Secret names). A management node registers without
	// --cloud-provider=external: no cloud controller initialises management Nodes.
	Cluster *harness.Cluster
	// Name of the Node (the kubelet's --hostname-override): for a tenant node the VM's name,
	// as CAPK guests are named.
	Name string
	// ProviderID is the VM's, kubevirt://<vm>; the kubelet registers the Node with it.
	// Required for tenant nodes; a management node has none.
	ProviderID string
	// NodeIP is the VM's address (what the ccm reports from the VMI), the kubelet's --node-ip.
	NodeIP netip.Addr
	// PodCIDR is where this node's pods get addresses from.
	PodCIDR netip.Prefix
	// DeviceDir is the VM's /dev/disk/by-id (sim.DeviceDir); the node sees it there. Empty:
	// an empty directory of the node's own (a VM without hot-plugged disks).
	DeviceDir string
	// Images are OCI image archives (BuildImages) imported into the node's containerd before
	// the kubelet starts. The sandbox image PauseImage must be among them.
	Images []string
	// Registries are plain-HTTP registries on the host's loopback (host:port, e.g.
	// harness.Registry.Addr): the node reaches them at the same address and its containerd
	// pulls from them over HTTP, as from a cluster's internal registry.
	Registries []string
}

// Node is a running real node. Stop it before the harness.
type Node struct {
	Name string
	// Dir holds everything the node writes: logs, containerd's root and state, and the
	// kubelet's root directory.
	Dir string
	// KubeletDir is the kubelet's root directory as the node sees it, /var/lib/kubelet, the
	// same on every node as the charts expect; it is KubeletHostDir bound there in the node's
	// mount namespace (mounts made under it are seen inside the node only).
	KubeletDir, KubeletHostDir string
	// ContainerdSocket is the node's CRI endpoint.
	ContainerdSocket string
	// NetNS and MountNS are the paths of the node's namespaces (for nsenter).
	NetNS, MountNS string

	Kubelet, Containerd, KubeProxy *harness.Process
	// Cluster is the cluster the node joined (Options.Cluster).
	Cluster *harness.Cluster

	cgroup  string
	netns   string
	forward forwarder
	// loopbackAddrs are the advertised apiserver addresses put on the node's loopback.
	loopbackAddrs []string
	dns           *dnsServer
}

// Need is the harness.Require need of tests that run real nodes: root, containerd, runc, the
// CNI plugins, iproute2, iptables, br_netfilter, cgroup v1 and the kubelet and kube-proxy
// from make bin.
const Need = harness.NeedNodes

// Supported says whether this machine can run real nodes and what is missing if not.
func Supported(env *harness.Env) error {
	if os.Geteuid() != 0 {
		return errors.New("real nodes need root (namespaces, cgroups, mounts)")
	}
	var missing []string
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "nsenter", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %v (apt-get install containerd runc containernetworking-plugins iproute2 iptables util-linux)", missing)
	}
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		return fmt.Errorf("bridged traffic cannot pass iptables (Services between pods of a node): modprobe br_netfilter: %w", err)
	}
	for _, b := range []string{"kubelet", "kube-proxy"} {
		if fi, err := os.Stat(filepath.Join(env.Assets.BinDir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s not in %s: run make bin", b, env.Assets.BinDir)
		}
	}
	if _, err := hierarchies(); err != nil {
		return err
	}
	return nil
}

// ReapOrphans ends what the nodes of killed test binaries left: their cgroup subtrees
// (containerd, shims, containers) and network namespaces.
func ReapOrphans() (int, error) {
	n, err := reapCgroups()
	entries, _ := os.ReadDir("/run/netns")
	var errs []error
	for _, e := range entries {
		if owner, ok := ownerPID(e.Name()); ok && !processAlive(owner) {
			errs = append(errs, removeNetwork(e.Name()))
			n++
		}
	}
	return n, errors.Join(append(errs, err)...)
}

// Start brings up a node and returns once its containerd serves and its kubelet runs; it does
// not wait for the Node to be Ready (the ccm initialises it first). On error nothing is left.
func Start(ctx context.Context, env *harness.Env, opts Options) (n *Node, err error) {
	if opts.Cluster == nil {
		opts.Cluster = env.Tenant
	}
	tenant := opts.Cluster == env.Tenant
	if opts.Name == "" || (tenant && opts.ProviderID == "") || !opts.NodeIP.IsValid() || !opts.PodCIDR.IsValid() {
		return nil, errors.New("node: Name, ProviderID (tenant nodes), NodeIP and PodCIDR are required")
	}
	start := time.Now()
	id := fmt.Sprintf("%s%d-%s", cgroupPrefix, os.Getpid(), opts.Name)
	dir := filepath.Join(env.Dir, "nodes", opts.Name)
	n = &Node{
		Name: opts.Name, Dir: dir, KubeletDir: kubeletDir, KubeletHostDir: filepath.Join(dir, "kubelet"),
		ContainerdSocket: filepath.Join(dir, "containerd", "containerd.sock"),
		NetNS:            filepath.Join("/run/netns", id), MountNS: filepath.Join(dir, "ns", "mnt"),
		Cluster: opts.Cluster, cgroup: id, netns: id,
	}
	defer func() {
		if err != nil {
			if serr := n.Stop(); serr != nil {
				klog.ErrorS(serr, "Cleaning up a node that failed to start", "node", opts.Name)
			}
			n = nil
		}
	}()
	if err := os.MkdirAll(n.KubeletHostDir, 0o750); err != nil {
		return n, err
	}
	if err := makeCgroup(n.cgroup + "/system"); err != nil {
		return n, err
	}
	if err := setupNetwork(ctx, n.netns, opts.NodeIP.String()); err != nil {
		return n, err
	}
	deviceDir := opts.DeviceDir
	if deviceDir == "" {
		deviceDir = filepath.Join(dir, "by-id")
	}
	if err := setupMounts(ctx, n.MountNS, deviceDir, n.KubeletHostDir); err != nil {
		return n, err
	}
	if err := n.reachAPIServer(ctx, opts.Cluster); err != nil {
		return n, err
	}
	if !tenant {
		// The management cluster reaches its tenants' control planes (Kamaji serves them as
		// pods and Services there); here the tenant apiserver's advertised endpoint.
		if err := n.serveAdvertised(ctx, env.Tenant.AdvertisedEndpoint(), env.Tenant); err != nil {
			return n, err
		}
	}
	for _, addr := range opts.Registries {
		if err := n.forward.forward(n.NetNS, addr, addr); err != nil {
			return n, err
		}
	}
	if err := n.serveDNS(ctx, opts.Cluster.Client); err != nil {
		return n, err
	}

	if err := n.startContainerd(ctx, opts); err != nil {
		return n, err
	}
	if err := n.startKubelet(ctx, env, opts, tenant); err != nil {
		return n, err
	}
	if err := n.startKubeProxy(ctx, env, opts); err != nil {
		return n, err
	}
	klog.InfoS("Real node started", "cluster", opts.Cluster.Name, "node", opts.Name, "ip", opts.NodeIP, "providerID", opts.ProviderID,
		"deviceDir", deviceDir, "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	return n, nil
}

// reachAPIServer makes the node's apiserver reachable from the node as from a cluster node:
// at its kubeconfig address (127.0.0.1:<port> inside the node, for the node's daemons) and at
// the address it advertises as the kubernetes Service's endpoint (the host's primary address:
// kube-proxy DNATs pods' Service traffic there). Both are served inside the node's namespace
// (the advertised address as a /32 on its loopback, private to the node, so nothing is sent
// towards the host's real interface) and forwarded to the apiserver's loopback listener.
func (n *Node) reachAPIServer(ctx context.Context, c *harness.Cluster) error {
	apiserver, err := url.Parse(c.Config.Host)
	if err != nil {
		return fmt.Errorf("%s apiserver address: %w", c.Name, err)
	}
	if err := n.forward.forward(n.NetNS, apiserver.Host, apiserver.Host); err != nil {
		return err
	}
	eps := &discoveryv1.EndpointSliceList{}
	if err := c.Client.List(ctx, eps, client.InNamespace(metav1.NamespaceDefault),
		client.MatchingLabels{discoveryv1.LabelServiceName: "kubernetes"}); err != nil {
		return fmt.Errorf("reading the kubernetes Service's endpoints: %w", err)
	}
	var advertised []string
	for _, s := range eps.Items {
		for _, p := range s.Ports {
			for _, e := range s.Endpoints {
				for _, a := range e.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil && !ip.IsLoopback() && p.Port != nil {
						advertised = append(advertised, net.JoinHostPort(a, strconv.Itoa(int(*p.Port))))
					}
				}
			}
		}
	}
	if len(advertised) == 0 {
		return errors.New("the kubernetes Service has no endpoint to serve inside the node")
	}
	for _, addr := range advertised {
		if err := n.serveAdvertised(ctx, addr, c); err != nil {
			return err
		}
	}
	return nil
}

// serveAdvertised serves c's apiserver inside the node at addr (host:port of a non-loopback
// address, put on the node's loopback once).
func (n *Node) serveAdvertised(ctx context.Context, addr string, c *harness.Cluster) error {
	if addr == "" {
		return fmt.Errorf("node %s: the %s apiserver has no advertised endpoint (no default route on this host?)", n.Name, c.Name)
	}
	apiserver, err := url.Parse(c.Config.Host)
	if err != nil {
		return fmt.Errorf("%s apiserver address: %w", c.Name, err)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("node %s: advertised endpoint %q: %w", n.Name, addr, err)
	}
	if !slices.Contains(n.loopbackAddrs, host) {
		bits := "/32"
		if strings.Contains(host, ":") {
			bits = "/128"
		}
		if err := run(ctx, "ip", "-n", n.netns, "addr", "add", host+bits, "dev", "lo"); err != nil {
			return fmt.Errorf("node %s: the apiserver's advertised address: %w", n.Name, err)
		}
		n.loopbackAddrs = append(n.loopbackAddrs, host)
	}
	return n.forward.forward(n.NetNS, addr, apiserver.Host)
}

// startIn runs binary inside the node's namespaces and cgroup, logging to <dir>/<name>.log.
func (n *Node) startIn(name, binary string, args ...string) (*harness.Process, error) {
	nsArgs := append([]string{"--net=" + n.NetNS, "--mount=" + n.MountNS, "--", binary}, args...)
	p, err := harness.StartBinary(n.Name+"/"+name, "/usr/bin/nsenter", filepath.Join(n.Dir, name+".log"), nsArgs...)
	if err != nil {
		return nil, err
	}
	// nsenter execs the binary in place, so this PID is the daemon's; whatever it starts later
	// (shims, mount helpers, iptables) is born in the node's cgroup.
	if err := joinCgroup(n.cgroup+"/system", p.Pid()); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// StartProcess runs a program on the node as a node's daemon runs: in its namespaces and
// cgroup (so Stop ends it too), logging to <Dir>/<name>.log. Tests use it for what a
// DaemonSet would run before images exist for it.
func (n *Node) StartProcess(name, binary string, args ...string) (*harness.Process, error) {
	return n.startIn(name, binary, args...)
}

// Command returns a command that runs inside the node's namespaces (not its cgroup).
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.NetNS, "--mount=" + n.MountNS, "--", name}, args...)...)
}

func (n *Node) startContainerd(ctx context.Context, opts Options) error {
	cdir := filepath.Join(n.Dir, "containerd")
	cni, err := cniConfig(opts.Name, opts.PodCIDR.String(), filepath.Join(cdir, "cni", "ipam"))
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(cdir, "cni", "net.d", "10-bridge.conflist"), cni); err != nil {
		return err
	}
	cfg := filepath.Join(cdir, "config.toml")
	if err := writeFile(cfg, []byte(containerdConfig(cdir, n.ContainerdSocket, PauseImage, opts.Registries))); err != nil {
		return err
	}
	if n.Containerd, err = n.startIn("containerd", "/usr/bin/containerd", "--config", cfg, "--log-level", "info"); err != nil {
		return err
	}
	if err := waitServing(ctx, n.ContainerdSocket, n.Containerd); err != nil {
		return fmt.Errorf("node %s: containerd: %w (log %s)", n.Name, err, n.Containerd.LogFile)
	}
	for _, archive := range opts.Images {
		// The CRI plugin sees images in the k8s.io namespace only.
		if err := run(ctx, "ctr", "--address", n.ContainerdSocket, "--namespace", "k8s.io", "images", "import", archive); err != nil {
			return fmt.Errorf("node %s: importing images: %w", n.Name, err)
		}
	}
	return nil
}

// waitServing waits until containerd answers gRPC health checks on socket.
func waitServing(ctx context.Context, socket string, p *harness.Process) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	return harness.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		if exited, err := p.Exited(); exited {
			return false, fmt.Errorf("exited: %v: %s", err, p.Log(2000))
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, err
	})
}

// nodeUser gives the node its own identity, as a kubelet's client certificate would
// (system:node:<name> in system:nodes), bound to the system:node role. The harness's
// apiserver runs RBAC only, so the Node authorizer's finer limits do not apply.
func nodeUser(ctx context.Context, c *harness.Cluster, name string) (*harness.User, error) {
	user := "system:node:" + name
	u, err := c.AddUser(user, "system:nodes")
	if err != nil {
		return nil, err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenantcloud-harness:node:" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := c.Client.Create(ctx, crb); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("binding %s to system:node: %w", user, err)
	}
	return u, nil
}

func (n *Node) startKubelet(ctx context.Context, env *harness.Env, opts Options, tenant bool) error {
	u, err := nodeUser(ctx, opts.Cluster, opts.Name)
	if err != nil {
		return err
	}
	if err := makeCgroup(n.cgroup); err != nil {
		return err
	}
	cfg, err := kubeletConfig(kubeletOptions{
		rootDir: n.KubeletDir, cgroupRoot: "/" + n.cgroup, containerdSocket: n.ContainerdSocket,
		providerID: opts.ProviderID, nodeIP: opts.NodeIP.String(), podLogsDir: filepath.Join(n.Dir, "pod-logs"),
	})
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(n.Dir, "kubelet.json")
	if err := writeFile(cfgPath, cfg); err != nil {
		return err
	}
	args := []string{
		"--config=" + cfgPath,
		"--kubeconfig=" + u.Kubeconfig,
		"--root-dir=" + n.KubeletDir,
		"--hostname-override=" + opts.Name,
		"--node-ip=" + opts.NodeIP.String(),
		"--v=2",
	}
	if tenant {
		// Tenant Nodes wait for the tenant's ccm to initialise them from their VM.
		args = append(args, "--cloud-provider=external")
	}
	n.Kubelet, err = n.startIn("kubelet", filepath.Join(env.Assets.BinDir, "kubelet"), args...)
	return err
}

func (n *Node) startKubeProxy(ctx context.Context, env *harness.Env, opts Options) error {
	// The bootstrap policy binds system:node-proxier to this user.
	u, err := opts.Cluster.AddUser("system:kube-proxy")
	if err != nil {
		return err
	}
	cfg, err := kubeProxyConfig(u.Kubeconfig, opts.Name, opts.PodCIDR.String())
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(n.Dir, "kube-proxy.json")
	if err := writeFile(cfgPath, cfg); err != nil {
		return err
	}
	n.KubeProxy, err = n.startIn("kube-proxy", filepath.Join(env.Assets.BinDir, "kube-proxy"), "--config="+cfgPath, "--v=2")
	return err
}

// Stop ends everything the node ran — daemons, shims, containers — and removes its
// namespaces (with their interfaces, iptables rules and mounts) and cgroups. The kubelet goes
// first so it does not restart what is being killed. Its directory stays in the harness's.
func (n *Node) Stop() error {
	var errs []error
	for _, p := range []*harness.Process{n.Kubelet, n.KubeProxy, n.Containerd} {
		if p != nil {
			errs = append(errs, p.Stop())
		}
	}
	// Shims and containers outlive containerd by design; the cgroup holds them all.
	errs = append(errs, killCgroup(n.cgroup, time.Minute))
	n.forward.close()
	n.dns.stop()
	errs = append(errs, removeMounts(n.MountNS), removeNetwork(n.netns))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping node %s: %w", n.Name, err)
	}
	klog.InfoS("Real node stopped", "node", n.Name)
	return nil
}

// Log returns the tail of one of the node's logs: "kubelet", "containerd" or "kube-proxy".
func (n *Node) Log(name string, bytes int) string {
	for _, p := range []*harness.Process{n.Kubelet, n.KubeProxy, n.Containerd} {
		if p != nil && strings.HasSuffix(p.Name, "/"+name) {
			return p.Log(bytes)
		}
	}
	return ""
}

func processAlive(pid int) bool { return pid > 0 && isAlive(pid) }

// ContainerLog returns what container of the pod (namespace, name, uid) wrote to stdout and
// stderr, from the log file the kubelet keeps on the node (the apiserver cannot reach the
// kubelet here, so `kubectl logs` cannot).
func (n *Node) ContainerLog(namespace, name, uid, container string) (string, error) {
	dir := filepath.Join(n.Dir, "pod-logs", namespace+"_"+name+"_"+uid, container)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("node %s: logs of %s/%s %s: %w", n.Name, namespace, name, container, err)
	}
	var out strings.Builder
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		// CRI log lines: <time> <stream> <F|P> <text>.
		for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
			if f := strings.SplitN(line, " ", 4); len(f) == 4 {
				out.WriteString(f[3])
				if f[2] == "F" {
					out.WriteString("\n")
				}
			}
		}
	}
	return out.String(), nil
}
