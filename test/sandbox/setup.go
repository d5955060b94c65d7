package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/cdi"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

const uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"

func (s *sandbox) startControlPlanes(ctx context.Context) error {
	step("starting management and tenant control planes (etcd + kube-apiserver each)")
	env, err := harness.Start(ctx)
	if err != nil {
		return err
	}
	s.env = env
	ok("control planes up: management %s, tenant %s", env.Management.Config.Host, env.Tenant.Config.Host)
	if _, err := env.StartScheduler(ctx); err != nil {
		return fmt.Errorf("tenant kube-scheduler: %w", err)
	}
	ok("real kube-scheduler running against the tenant")
	return nil
}

func (s *sandbox) startSimulator(ctx context.Context) error {
	step("starting simulator: KubeVirt, virt-api, CDI, Cluster API + CAPK, MetalLB controller, guest disks")
	si, err := sim.Start(ctx, s.env, sim.Options{
		ClusterName: clusterName, ExternalCloudProvider: true, MetalLB: true, Disks: true, PhaseDelay: phaseDelayFlag,
	})
	if err != nil {
		return err
	}
	s.sim = si
	ok("simulator running (phase delay %s)", phaseDelayFlag)
	return nil
}

func (s *sandbox) bin(name string) string { return filepath.Join(s.env.Assets.BinDir, name) }

func (s *sandbox) startComponents(ctx context.Context) error {
	for _, p := range []string{"ccm", "csi-controller", "csi-node", "autoscaler-provider"} {
		if _, err := os.Stat(s.bin(p)); err != nil {
			return fmt.Errorf("%s not built (run `make build` or `make sandbox`): %w", s.bin(p), err)
		}
	}
	mgmt := s.env.Management.Client
	step("management: namespace %s, MetalLB IPAddressPool %s (%s), StorageClass %s", infraNS, poolName, poolCIDR, infraSC)
	immediate := storagev1.VolumeBindingImmediate
	expand := true
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: infraNS}},
		&unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
			"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": poolName},
			"spec":     map[string]any{"addresses": []any{poolCIDR}, "autoAssign": false},
		}},
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: infraSC}, Provisioner: cdi.Driver,
			AllowVolumeExpansion: &expand, VolumeBindingMode: &immediate},
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	step("identities: the charts' ServiceAccounts, Roles and ClusterRoles (helm template), applied to both clusters")
	creds, err := s.chartIdentities(ctx)
	if err != nil {
		return err
	}
	s.creds = creds
	ok("every component runs as its chart ServiceAccount with exactly the chart's roles (none is admin)")
	if err := s.writeConfigs(); err != nil {
		return err
	}
	ok("config files written, one per component, in %s", s.logDir)

	ccm, err := s.spawn("ccm", s.bin("ccm"), "--config", s.cfg.files["ccm"], "--v=2",
		"--leader-elect=false", "--node-monitor-period=1s", "--metrics-bind-address=0", "--node-zones=true")
	if err != nil {
		return err
	}
	s.cfg.ctrlSock = filepath.Join(s.logDir, "csi-controller.sock")
	ctrl, err := s.spawn("csi-controller", s.bin("csi-controller"), "--config", s.cfg.files["csi-controller"],
		"--endpoint", "unix://"+s.cfg.ctrlSock, "--metrics-bind-address=0", "--v=2")
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.provider = "127.0.0.1:" + strconv.Itoa(port)
	prov, err := s.spawn("autoscaler-provider", s.bin("autoscaler-provider"), "--config", s.cfg.files["autoscaler-provider"],
		"--listen", s.provider, "--metrics-bind-address=0", "--v=2")
	if err != nil {
		return err
	}
	if err := s.waitCSI(ctx, "csi-controller", ctrl, s.cfg.ctrlSock); err != nil {
		return err
	}
	ok("csi-controller serving CSI on %s", s.cfg.ctrlSock)
	if err := waitHealth(ctx, prov, s.provider); err != nil {
		return err
	}
	ok("autoscaler-provider serving the externalgrpc CloudProvider on %s", s.provider)
	if err := exited(ccm); err != nil {
		return err
	}
	ok("ccm running (log %s)", ccm.LogFile)
	return nil
}

// writeConfigs writes one config file per component: the same tenant and grant, each with
// its own credentials (csi-node's has no infra credentials and no storage classes).
func (s *sandbox) writeConfigs() error {
	s.cfg.files = map[string]string{}
	for name, cr := range s.creds {
		if name == "cluster-autoscaler" {
			continue // not a tenantcloud program: it gets --kubeconfig
		}
		cfg := map[string]any{
			"clusterName":      clusterName,
			"infraNamespace":   infraNS,
			"infraKubeconfig":  cr.infra,
			"tenantKubeconfig": cr.tenant,
			"loadBalancer": map[string]any{
				"allowedPools":    []string{poolName},
				"defaultPool":     poolName,
				"allowedIPRanges": []string{poolCIDR},
			},
			"storage": map[string]any{"defaultStorageClass": infraSC},
		}
		if name == "csi-node" {
			delete(cfg, "infraKubeconfig")
			delete(cfg, "storage")
		}
		data, err := yaml.Marshal(cfg)
		if err != nil {
			return err
		}
		p := filepath.Join(s.logDir, "tenant-alpha-"+name+".yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		s.cfg.files[name] = p
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

// createTenantCluster creates the tenant's Cluster API objects and waits for its first worker
// to join the tenant and be initialised by the ccm.
func (s *sandbox) createTenantCluster(ctx context.Context) error {
	mgmt := s.env.Management.Client
	md := capi.NewMachineDeployment(infraNS, mdName, clusterName, mdName, 1)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "1", autoscaler.AnnotationMaxSize: "3"}
	step("management: Cluster %s/%s, KubevirtMachineTemplate (2 cores, 4Gi), MachineDeployment %s (1 replica, autoscale 1..3)", infraNS, clusterName, mdName)
	for _, obj := range []client.Object{
		capi.NewCluster(infraNS, clusterName),
		capi.NewKubevirtMachineTemplate(infraNS, mdName, clusterName, 2, "4Gi"),
		md,
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	nodes, err := s.waitNodes(ctx, 1)
	if err != nil {
		return err
	}
	s.worker, err = infra.VMNameFromProviderID(nodes[0].Spec.ProviderID)
	if err != nil {
		return err
	}
	return s.ensureCSINodes(ctx, nodes)
}

// waitNodes waits for n tenant Nodes backed by VMs that are Ready and initialised by the ccm
// (uninitialized taint gone, addresses set), printing each as it joins.
func (s *sandbox) waitNodes(ctx context.Context, n int) ([]corev1.Node, error) {
	step("waiting for %d worker Node(s) in the tenant: VM boots, node registers, ccm initialises it", n)
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
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
		for _, node := range list.Items {
			if !strings.HasPrefix(node.Spec.ProviderID, infra.ProviderIDPrefix) {
				continue
			}
			if !seen["reg/"+node.Name] {
				seen["reg/"+node.Name] = true
				if hasTaint(&node, uninitializedTaint) {
					ok("Node %s registered (providerID %s) with the uninitialized taint; waiting for the ccm", node.Name, node.Spec.ProviderID)
				} else {
					ok("Node %s registered (providerID %s); the ccm already removed the uninitialized taint", node.Name, node.Spec.ProviderID)
				}
			}
			if hasTaint(&node, uninitializedTaint) || len(node.Status.Addresses) == 0 || !nodeReady(&node) {
				continue
			}
			if !seen["init/"+node.Name] {
				seen["init/"+node.Name] = true
				var addrs []string
				for _, a := range node.Status.Addresses {
					addrs = append(addrs, string(a.Type)+"="+a.Address)
				}
				ok("Node %s Ready, initialised by ccm: taint removed, addresses %s, instance-type %q, zone %q region %q (of the infra node running the VM)", node.Name,
					strings.Join(addrs, " "), node.Labels[corev1.LabelInstanceTypeStable], node.Labels[corev1.LabelTopologyZone], node.Labels[corev1.LabelTopologyRegion])
			}
			ready = append(ready, node)
		}
		return len(ready) >= n, nil
	})
	return ready, err
}

func (s *sandbox) componentsAlive() error {
	for _, c := range s.children {
		if err := exited(c); err != nil {
			return err
		}
	}
	return nil
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
