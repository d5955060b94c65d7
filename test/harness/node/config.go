package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// containerdConfig is containerd 1.6's config for one node: everything under dir (root, state,
// sockets, runc state, the CNI configuration and IPAM), the CRI plugin on cgroupfs with the
// harness's pause image, and the settings this machine needs:
//   - restrict_oom_score_adj: the machine lacks CAP_SYS_RESOURCE, so a container may not get a
//     lower OOM score than containerd's own (runc fails with "can't get final child's PID
//     from pipe" otherwise);
//   - netns_mounts_under_state_dir: pod network namespaces are mounted in the node's state,
//     not the host's /run/netns.
func containerdConfig(dir, socket, sandboxImage string, registries []string) string {
	var mirrors strings.Builder
	for _, r := range registries {
		// Loopback registries speak plain HTTP; the CRI plugin needs to be told.
		fmt.Fprintf(&mirrors, "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n    endpoint = [%q]\n", r, "http://"+r)
	}
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[6]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
%[8]s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket, filepath.Join(dir, "opt"),
		sandboxImage, filepath.Join(dir, "cni", "net.d"), filepath.Join(dir, "runc"), mirrors.String())
}

// cniConfig is the node's pod network: a bridge with the pods' gateway on it and addresses
// from podCIDR (host-local, its state under dir). The bridge lives in the node's network
// namespace, so every node can call it cni0.
func cniConfig(name, podCIDR, ipamDir string) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "tenantcloud-" + name,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
				"ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
					"dataDir": ipamDir,
				},
			},
		},
	}, "", "  ")
}

// kubeletConfig is the node's KubeletConfiguration. Besides paths under dir it carries what
// this machine needs: cgroupfs on cgroup v1 (failCgroupV1: false), no swap check, a cgroupRoot
// of its own (two kubelets on one /kubepods would each kill the other's pods as orphans), no
// OOM score change for itself (no CAP_SYS_RESOURCE), image GC only on a full disk (the
// harness's images are imported, not pullable) and eviction thresholds a shared CI disk does
// not trip. The apiserver cannot reach the kubelet here, so its API is open to anonymous
// requests inside the node's namespace only.
func kubeletConfig(o kubeletOptions) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               o.cgroupRoot,
		"failCgroupV1":             false,
		"failSwapOn":               false,
		"containerRuntimeEndpoint": "unix://" + o.containerdSocket,
		"providerID":               o.providerID,
		"address":                  o.nodeIP,
		"port":                     10250,
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              10248,
		"podLogsDir":               o.podLogsDir,
		"oomScoreAdj":              0,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization":               map[string]any{"mode": "AlwaysAllow"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%",
		},
		"maxPods":                   30,
		"serializeImagePulls":       false,
		"nodeStatusUpdateFrequency": "5s",
		"syncFrequency":             "10s",
		"fileCheckFrequency":        "10s",
		"volumePluginDir":           filepath.Join(o.rootDir, "volume-plugins"),
		"registerNode":              true,
		// Pods resolve Service names through the node's own DNS responder (dns.go).
		"clusterDNS":    []string{ClusterDNSIP},
		"clusterDomain": ClusterDomain,
	}, "", "  ")
}

type kubeletOptions struct {
	rootDir, cgroupRoot, containerdSocket, providerID, nodeIP, podLogsDir string
}

// kubeProxyConfig runs kube-proxy's iptables mode inside the node's namespace. Conntrack
// limits stay as they are (writing them needs CAP_SYS_RESOURCE on a global table) and so does
// its OOM score.
func kubeProxyConfig(kubeconfig, nodeName, podCIDR string) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   map[string]any{"kubeconfig": kubeconfig},
		"hostnameOverride":   nodeName,
		"mode":               "iptables",
		"clusterCIDR":        podCIDR,
		"bindAddress":        "0.0.0.0",
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		"oomScoreAdj":        0,
		"conntrack":          map[string]any{"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
		"iptables":           map[string]any{"localhostNodePorts": false, "syncPeriod": "30s", "minSyncPeriod": "0s"},
	}, "", "  ")
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
