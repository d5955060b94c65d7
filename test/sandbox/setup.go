package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
	"github.com/tenantcloud/tenantcloud/test/sim"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/cdi"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

// tenantControllers are the tenant's kube-controller-manager controllers the stories need: pod
// ServiceAccounts and their CA, Node lifecycle (the not-ready taint), DaemonSets (csi-node),
// Deployments, the PV binder, attach-detach and protection, and garbage collection.
var tenantControllers = []string{
	"serviceaccount-controller", "serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
	"node-lifecycle-controller", "daemonset-controller", "deployment-controller", "replicaset-controller",
	"persistentvolume-attach-detach-controller", "persistentvolume-binder-controller",
	"persistentvolume-expander-controller", "persistentvolume-protection-controller",
	"persistentvolumeclaim-protection-controller", "garbage-collector-controller",
}

// needs checks that this machine can run the sandbox, naming what is missing.
func (s *sandbox) needs() error {
	if err := node.Supported(s.env); err != nil {
		return fmt.Errorf("real nodes: %w", err)
	}
	if err := disks.Supported(); err != nil {
		return fmt.Errorf("guest disks: %w", err)
	}
	if _, err := exec.LookPath(harness.RegistryBinary); err != nil {
		return fmt.Errorf("the image registry: %w (apt-get install docker-registry)", err)
	}
	for _, b := range []string{"helm", "imagebuild", "cluster-autoscaler", "csi-provisioner", "csi-attacher", "csi-resizer",
		"ccm", "csi-controller", "autoscaler-provider"} {
		if _, err := os.Stat(s.bin(b)); err != nil {
			return fmt.Errorf("%s: run make sandbox (make bin images build): %w", s.bin(b), err)
		}
	}
	if _, err := os.Stat(s.imagesDir()); err != nil {
		return fmt.Errorf("bin/images: run make images: %w", err)
	}
	return nil
}

func (s *sandbox) startControlPlanes(ctx context.Context) error {
	step("starting management and tenant control planes (etcd + kube-apiserver each)")
	env, err := harness.StartWith(ctx, harness.Options{TenantServiceAccounts: true})
	if err != nil {
		return err
	}
	s.env = env
	ok("control planes up: management %s, tenant %s", env.Management.Config.Host, env.Tenant.Config.Host)
	if err := s.needs(); err != nil {
		return err
	}
	if n, err := node.ReapOrphans(); err != nil || n > 0 {
		note("reaped %d network namespaces and cgroups a killed run left (%v)", n, err)
	}
	if _, err := env.StartScheduler(ctx); err != nil {
		return fmt.Errorf("tenant kube-scheduler: %w", err)
	}
	if _, err := env.StartControllerManager(ctx, env.Tenant, tenantControllers...); err != nil {
		return fmt.Errorf("tenant kube-controller-manager: %w", err)
	}
	ok("tenant: real kube-scheduler and kube-controller-manager (%d controllers: DaemonSets, Deployments, PV binder, attach-detach, node lifecycle, ...)", len(tenantControllers))
	return nil
}

func (s *sandbox) startSimulator(ctx context.Context) error {
	step("starting simulator: KubeVirt, virt-api, CDI, Cluster API + CAPK, MetalLB controller, guest disks on loop devices")
	si, err := sim.Start(ctx, s.env, sim.Options{
		ClusterName: clusterName, ExternalCloudProvider: true, MetalLB: true, Disks: true, PhaseDelay: phaseDelayFlag,
		Kubelets: s.workers,
	})
	if err != nil {
		return err
	}
	s.sim = si
	ok("simulator running (phase delay %s); Cluster API workers get real kubelet nodes, at most %d at a time", phaseDelayFlag, s.workers.max)
	return nil
}

func (s *sandbox) bin(name string) string { return filepath.Join(s.env.Assets.BinDir, name) }

// imagesDir is what make images wrote: the OCI layout and images.txt.
func (s *sandbox) imagesDir() string { return filepath.Join(s.env.Assets.BinDir, "images") }

// startRegistry runs a loopback registry and pushes the images make images built to it, as an
// operator pushes them to theirs (make images PUSH=1), and builds the harness images (pause,
// volprobe) every real node imports.
func (s *sandbox) startRegistry(ctx context.Context) error {
	step("registry: pushing bin/images (make images) to a loopback registry; building the nodes' pause and volprobe images")
	built := make(chan error, 1)
	go func() {
		var err error
		s.images, err = node.BuildImages(ctx, s.logDir)
		built <- err
	}()
	dir := filepath.Join(s.logDir, "registry")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	reg, err := harness.StartRegistry(ctx, dir)
	if err != nil {
		return errors.Join(err, <-built)
	}
	s.reg = reg
	repo := reg.Addr + "/tenantcloud"
	if out, err := exec.CommandContext(ctx, s.bin("imagebuild"), "push", "--out", s.imagesDir(), "--registry", repo).CombinedOutput(); err != nil {
		return errors.Join(fmt.Errorf("pushing bin/images to %s: %w\n%s", repo, err, out), <-built)
	}
	if s.refs, err = imageRefs(filepath.Join(s.imagesDir(), "images.txt"), repo); err != nil {
		return errors.Join(err, <-built)
	}
	if err := <-built; err != nil {
		return err
	}
	ok("registry %s holds %d images (csi-node %s)", reg.Addr, len(s.refs), s.refs["csi-node"])
	return nil
}

// imageRefs reads images.txt (name, reference, digest, sizes) and returns each image's
// reference in repo.
func imageRefs(file, repo string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("bin/images: run make images: %w", err)
	}
	defer func() { _ = f.Close() }()
	refs := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 2 {
			continue
		}
		ref := fields[1]
		refs[fields[0]] = repo + "/" + ref[strings.LastIndex(ref, "/")+1:]
	}
	if refs["csi-node"] == "" {
		return nil, fmt.Errorf("%s names no csi-node image: run make images", file)
	}
	return refs, sc.Err()
}

// valuesFile is a values file of the sandbox's tenant, kept beside this source file.
func valuesFile(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "values", name)
}

// installTenantChart installs the tenant chart with the real helm into the tenant's
// kube-system, with the operator's values (values/tenant.yaml) and csi-node from the registry.
func (s *sandbox) installTenantChart(ctx context.Context) error {
	ref := s.refs["csi-node"]
	i := strings.LastIndex(ref, ":")
	step("tenant: helm install %s deploy/charts/tenantcloud-tenant -n kube-system -f test/sandbox/values/tenant.yaml (csi-node %s)", chartRelease, ref)
	_, err := chartrender.Helm(ctx, s.bin("helm"), "install", chartRelease, chartrender.ChartDir("tenantcloud-tenant"),
		"--namespace", "kube-system", "--kubeconfig", s.env.Tenant.Kubeconfig, "--values", valuesFile("tenant.yaml"),
		"--set", "images.csiNode.repository="+ref[:i], "--set", "images.csiNode.tag="+ref[i+1:])
	if err != nil {
		return err
	}
	ok("tenant chart installed: csi-node DaemonSet, CSIDriver, StorageClass %s, the ccm's and cluster-autoscaler's tenant roles", storageClass)
	return nil
}

// startComponents runs the management side as processes with the args and config the
// management chart renders (helm template with values/management.yaml): ccm, csi-controller
// and its CSI sidecars, autoscaler-provider. Each runs as its chart ServiceAccount.
func (s *sandbox) startComponents(ctx context.Context) error {
	mgmt := s.env.Management.Client
	step("management: namespace %s, MetalLB IPAddressPools %s (%s, granted) and %s (not granted), StorageClass %s", infraNS, poolName, poolCIDR, otherPool, infraSC)
	immediate := storagev1.VolumeBindingImmediate
	expand := true
	pool := func(name, cidr string) client.Object {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
			"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": name},
			"spec":     map[string]any{"addresses": []any{cidr}, "autoAssign": false},
		}}
	}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: infraNS}},
		pool(poolName, poolCIDR), pool(otherPool, otherCIDR),
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: infraSC}, Provisioner: cdi.Driver,
			AllowVolumeExpansion: &expand, VolumeBindingMode: &immediate},
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	if err := s.installTenantChart(ctx); err != nil {
		return err
	}
	step("identities: the management chart's ServiceAccounts and Roles (helm template -f test/sandbox/values/management.yaml) applied; client certificates for every chart ServiceAccount")
	objs, err := s.chartIdentities(ctx)
	if err != nil {
		return err
	}
	ok("every component runs as its chart ServiceAccount with exactly the chart's roles (none is admin)")
	if err := s.writeConfigs(objs); err != nil {
		return err
	}
	ok("config files from the chart's config Secret, one per component with its credentials, in %s", s.logDir)

	args := func(container string, set map[string]string) ([]string, error) {
		deployment := map[string]string{"ccm": "ccm", "autoscaler-provider": "autoscaler"}[container]
		if deployment == "" {
			deployment = "csi-controller"
		}
		a, err := chartrender.ContainerArgs(objs, "Deployment", chartRelease+"-"+deployment, container)
		if err != nil {
			return nil, err
		}
		return chartrender.LocalArgs(a, set), nil
	}
	ccmArgs, err := args("ccm", map[string]string{"--config": s.cfg["ccm"], "--metrics-bind-address": "0", "--node-monitor-period": "1s"})
	if err != nil {
		return err
	}
	ccm, err := s.spawn("ccm", s.bin("ccm"), ccmArgs...)
	if err != nil {
		return err
	}
	s.ctrlSock = filepath.Join(s.logDir, "csi-controller.sock")
	ctrlArgs, err := args("csi-controller", map[string]string{"--config": s.cfg["csi-controller"], "--endpoint": "unix://" + s.ctrlSock, "--metrics-bind-address": "0"})
	if err != nil {
		return err
	}
	ctrl, err := s.spawn("csi-controller", s.bin("csi-controller"), ctrlArgs...)
	if err != nil {
		return err
	}
	for _, sidecar := range []string{"csi-provisioner", "csi-attacher", "csi-resizer"} {
		a, err := args(sidecar, map[string]string{"--csi-address": s.ctrlSock, "--kubeconfig": s.env.Tenant.Kubeconfig})
		if err != nil {
			return err
		}
		if _, err := s.spawn(sidecar, s.bin(sidecar), a...); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	// Plain gRPC between cluster-autoscaler and autoscaler-provider on the loopback; the chart's
	// mTLS Secrets come with the pods.
	s.provider = "127.0.0.1:" + strconv.Itoa(port)
	prov, err := s.spawn("autoscaler-provider", s.bin("autoscaler-provider"), "--config", s.cfg["autoscaler-provider"],
		"--listen", s.provider, "--metrics-bind-address=0", "--v=2")
	if err != nil {
		return err
	}
	if err := waitCSI(ctx, ctrl, s.ctrlSock); err != nil {
		return err
	}
	ok("csi-controller serving CSI on %s, with the real csi-provisioner, csi-attacher and csi-resizer (the chart's args)", s.ctrlSock)
	if err := waitHealth(ctx, prov, s.provider); err != nil {
		return err
	}
	ok("autoscaler-provider serving the externalgrpc CloudProvider on %s", s.provider)
	if err := exited(ccm); err != nil {
		return err
	}
	ok("ccm running (the chart's args; log %s)", ccm.LogFile)
	return nil
}

// workerCores is the worker VMs' vCPUs: what a real node here reports, this machine's CPUs.
func workerCores() int { return runtime.NumCPU() }

// writeConfigs writes each tenantcloud component's config file: the config.yaml of the
// chart's config Secret with the component's own kubeconfigs (csi-node's has none on the
// infra side: it runs in the tenant and reads nothing there).
func (s *sandbox) writeConfigs(objs []*unstructured.Unstructured) error {
	secret := chartrender.Find(objs, "Secret", chartRelease+"-config")
	if secret == nil {
		return errors.New("the management chart rendered no config Secret")
	}
	rendered, _, err := unstructured.NestedString(secret.Object, "stringData", "config.yaml")
	if err != nil || rendered == "" {
		return fmt.Errorf("config Secret %s: no config.yaml (%v)", secret.GetName(), err)
	}
	s.cfg = map[string]string{}
	for _, name := range []string{"ccm", "csi-controller", "autoscaler-provider"} {
		cfg := map[string]any{}
		if err := yaml.Unmarshal([]byte(rendered), &cfg); err != nil {
			return fmt.Errorf("config Secret %s: %w", secret.GetName(), err)
		}
		cfg["infraKubeconfig"], cfg["tenantKubeconfig"] = s.creds[name].infra, s.creds[name].tenant
		data, err := yaml.Marshal(cfg)
		if err != nil {
			return err
		}
		p := filepath.Join(s.logDir, infraNS+"-"+name+".yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		s.cfg[name] = p
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitCSI waits until the CSI plugin at sock answers gRPC health checks or, as the CSI
// identity service is all a CSI plugin must serve, accepts connections.
func waitCSI(ctx context.Context, c *harness.Process, sock string) error {
	return poll(ctx, c.Name+" serving on "+sock, func(ctx context.Context) (bool, error) {
		if err := exited(c); err != nil {
			return false, err
		}
		conn, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return false, err
		}
		_ = conn.Close()
		return true, nil
	})
}

// waitHealth waits until the gRPC health service at addr reports SERVING.
func waitHealth(ctx context.Context, c *harness.Process, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	hc := healthpb.NewHealthClient(conn)
	return poll(ctx, c.Name+" answering gRPC health checks on "+addr, func(ctx context.Context) (bool, error) {
		if err := exited(c); err != nil {
			return false, err
		}
		rsp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && rsp.GetStatus() == healthpb.HealthCheckResponse_SERVING, err
	})
}

// createTenantCluster creates the tenant's Cluster API objects, as an operator does, and waits
// until its two workers have joined the tenant as real nodes, been initialised by the ccm, and
// run the tenant chart's csi-node pod with the driver registered.
func (s *sandbox) createTenantCluster(ctx context.Context) error {
	mgmt := s.env.Management.Client
	md := capi.NewMachineDeployment(infraNS, mdName, clusterName, mdName, 2)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "2", autoscaler.AnnotationMaxSize: strconv.Itoa(maxWorkers)}
	step("management: Cluster %s/%s, KubevirtMachineTemplate (%d cores as this machine has, 4Gi), MachineDeployment %s (2 replicas, autoscaled 2..%d)",
		infraNS, clusterName, workerCores(), mdName, maxWorkers)
	start := time.Now()
	for _, obj := range []client.Object{
		capi.NewCluster(infraNS, clusterName),
		capi.NewKubevirtMachineTemplate(infraNS, mdName, clusterName, int64(workerCores()), "4Gi"),
		md,
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	nodes, err := s.waitNodes(ctx, 2)
	if err != nil {
		return err
	}
	if err := s.waitCSINodes(ctx, nodes); err != nil {
		return err
	}
	ok("tenant cluster up: 2 real worker nodes with csi-node, %s after the MachineDeployment was created", since(start))
	return nil
}

// waitNodes waits for n tenant Nodes backed by VMs that are Ready and initialised by the ccm
// (uninitialized taint gone, addresses set), printing each as it joins.
func (s *sandbox) waitNodes(ctx context.Context, n int) ([]corev1.Node, error) {
	step("waiting for %d worker Node(s): Machine → VM boots → kubelet registers → ccm initialises it", n)
	seen := s.seen
	var ready []corev1.Node
	err := poll(ctx, fmt.Sprintf("%d tenant Node(s) Ready and initialised by the ccm", n), func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(); err != nil {
			return false, err
		}
		var list corev1.NodeList
		if err := s.env.Tenant.Client.List(ctx, &list); err != nil {
			return false, err
		}
		ready = ready[:0]
		for _, nd := range list.Items {
			if !strings.HasPrefix(nd.Spec.ProviderID, infra.ProviderIDPrefix) || nd.DeletionTimestamp != nil {
				continue
			}
			kind := "real kubelet"
			if s.workers.node(nd.Name) == nil {
				kind = "simulated kubelet"
			}
			if !seen["reg/"+nd.Name] {
				seen["reg/"+nd.Name] = true
				ok("Node %s registered by its %s (providerID %s)", nd.Name, kind, nd.Spec.ProviderID)
			}
			if !node.Ready(&nd) || len(nd.Status.Addresses) == 0 {
				continue
			}
			if !seen["init/"+nd.Name] {
				seen["init/"+nd.Name] = true
				var addrs []string
				for _, a := range nd.Status.Addresses {
					addrs = append(addrs, string(a.Type)+"="+a.Address)
				}
				ok("Node %s Ready, initialised by the ccm: addresses %s, instance-type %q, zone %q region %q (of the infra node running the VM)", nd.Name,
					strings.Join(addrs, " "), nd.Labels[corev1.LabelInstanceTypeStable], nd.Labels[corev1.LabelTopologyZone], nd.Labels[corev1.LabelTopologyRegion])
			}
			ready = append(ready, nd)
		}
		return len(ready) >= n, nil
	})
	return ready, err
}

// waitCSINodes waits until the tenant chart's csi-node DaemonSet pod runs on each of the real
// nodes among nodes and the kubelet there registered the driver, and prints each pod with its
// image (from the registry).
func (s *sandbox) waitCSINodes(ctx context.Context, nodes []corev1.Node) error {
	for _, nd := range nodes {
		if s.workers.node(nd.Name) == nil || s.seen["csi/"+nd.Name] {
			continue
		}
		var pod corev1.Pod
		err := poll(ctx, "csi-node running on "+nd.Name+" with the driver registered", func(ctx context.Context) (bool, error) {
			var pods corev1.PodList
			if err := s.env.Tenant.Client.List(ctx, &pods, client.InNamespace("kube-system"),
				client.MatchingFields{"spec.nodeName": nd.Name}); err != nil {
				return false, err
			}
			found := false
			for _, p := range pods.Items {
				if strings.HasPrefix(p.Name, chartRelease+"-csi-node-") && p.Status.Phase == corev1.PodRunning && podReady(&p) {
					pod, found = p, true
				}
			}
			if !found {
				return false, nil
			}
			cn := &storagev1.CSINode{}
			if err := s.env.Tenant.Client.Get(ctx, client.ObjectKey{Name: nd.Name}, cn); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			for _, d := range cn.Spec.Drivers {
				if d.Name == tccsi.DriverName {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return err
		}
		s.seen["csi/"+nd.Name] = true
		ok("pod kube-system/%s Running on %s, image %s (DaemonSet %s-csi-node); driver %s registered with the kubelet", pod.Name, nd.Name,
			pod.Spec.Containers[0].Image, chartRelease, tccsi.DriverName)
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (s *sandbox) componentsAlive() error {
	for _, c := range s.children {
		if err := exited(c); err != nil {
			return err
		}
	}
	return nil
}
