package cloud

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfigYAML = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`

func TestFactory(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(kubeconfigYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	good := "clusterName: alpha\ninfraNamespace: tenant-a\ninfraKubeconfig: " + kc + "\ntenantKubeconfig: " + kc +
		"\nstorage: {defaultStorageClass: s}\nloadBalancer: {allowedPools: [p]}\n"
	tests := []struct {
		name, config string
		wantErr      string
	}{
		{"valid", good, ""},
		{"not the tenant config", "[Global]\nzone = x\n", "cloud config"},
		{"missing tenant kubeconfig", "clusterName: alpha\ninfraNamespace: tenant-a\nstorage: {defaultStorageClass: s}\n", "tenantKubeconfig"},
		{"unreadable infra kubeconfig", strings.Replace(good, "infraKubeconfig: "+kc, "infraKubeconfig: /nonexistent", 1), "infra kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Factory(Options{NodeZones: true})(strings.NewReader(tt.config))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ProviderName() != ProviderName || !p.HasClusterID() {
				t.Fatalf("provider %s", p.ProviderName())
			}
			if _, ok := p.LoadBalancer(); !ok {
				t.Error("no LoadBalancer")
			}
			if _, ok := p.InstancesV2(); !ok {
				t.Error("no InstancesV2")
			}
			for name, ok := range map[string]bool{"Instances": second(p.Instances()), "Zones": second(p.Zones()), "Routes": second(p.Routes()), "Clusters": second(p.Clusters())} {
				if ok {
					t.Errorf("%s implemented; InstancesV2 and the tenant CNI replace it", name)
				}
			}
		})
	}
	if _, err := Factory(Options{})(nil); err == nil {
		t.Fatal("no --cloud-config accepted")
	}
}

func second[T any](_ T, ok bool) bool { return ok }
