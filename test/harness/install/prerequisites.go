package install

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/test/sim"
	"github.com/tenantcloud/tenantcloud/test/sim/cdi"
)

// grant is the part of the management chart's config that names infra objects.
type grant struct {
	Pools           []string
	StorageClasses  []string
	SnapshotClasses []string
}

// readGrant reads the pools and classes the tenant is granted from the example values file
// with overlay's config on top (what helm renders into the config Secret).
func readGrant(path string, overlay map[string]any) (grant, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return grant{}, fmt.Errorf("the example values: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return grant{}, fmt.Errorf("%s: %w", path, err)
	}
	values = mergeValues(values, overlay)
	var g grant
	add := func(list *[]string, v any) {
		switch v := v.(type) {
		case string:
			if v != "" {
				*list = append(*list, v)
			}
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok && s != "" {
					*list = append(*list, s)
				}
			}
		}
	}
	cfg, _ := values["config"].(map[string]any)
	lb, _ := cfg["loadBalancer"].(map[string]any)
	storage, _ := cfg["storage"].(map[string]any)
	add(&g.Pools, lb["allowedPools"])
	add(&g.Pools, lb["defaultPool"])
	add(&g.StorageClasses, storage["defaultStorageClass"])
	add(&g.StorageClasses, storage["allowedStorageClasses"])
	add(&g.SnapshotClasses, storage["defaultSnapshotClass"])
	add(&g.SnapshotClasses, storage["allowedSnapshotClasses"])
	return g, nil
}

// mergeValues merges over into base as helm merges values files: maps recursively, anything
// else replaced.
func mergeValues(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeValues(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// prerequisites makes what the management chart's grant names and an operator has before
// installing it: the infra namespace, a MetalLB IPAddressPool per pool, and the infra
// StorageClasses and VolumeSnapshotClasses (CDI's provisioner, as LINSTOR's would be).
func (r *Release) prerequisites(ctx context.Context, s *sim.Sim, g grant) error {
	mgmt := r.env.Management
	if err := r.create(ctx, mgmt, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.Namespace}}); err != nil {
		return err
	}
	if len(g.Pools) > 0 && (s == nil || s.MetalLB == nil) {
		return errors.New("install: the grant names IPAddressPools, but the simulator runs no MetalLB (sim.Options.MetalLB)")
	}
	seen := map[string]bool{}
	next := netip.MustParseAddr("198.51.100.0")
	for _, pool := range g.Pools {
		if seen[pool] {
			continue
		}
		seen[pool] = true
		addrs := r.opts.PoolAddresses[pool]
		if addrs == "" {
			addrs = netip.PrefixFrom(next, 28).String()
			b := next.As4()
			b[3] += 16
			next = netip.AddrFrom4(b)
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
			"metadata": map[string]any{"namespace": s.MetalLB.Namespace(), "name": pool},
			"spec":     map[string]any{"addresses": []any{addrs}, "autoAssign": false},
		}}
		if err := r.create(ctx, mgmt, obj); err != nil {
			return err
		}
	}
	expand := true
	immediate := storagev1.VolumeBindingImmediate
	for _, sc := range g.StorageClasses {
		if err := r.create(ctx, mgmt, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: sc}, Provisioner: cdi.Driver,
			AllowVolumeExpansion: &expand, VolumeBindingMode: &immediate}); err != nil {
			return err
		}
	}
	for _, vsc := range g.SnapshotClasses {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
			"metadata": map[string]any{"name": vsc}, "driver": cdi.Driver, "deletionPolicy": "Delete",
		}}
		if err := r.create(ctx, mgmt, obj); err != nil {
			return err
		}
	}
	return nil
}
