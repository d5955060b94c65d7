package infra

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// NewScheme returns a scheme with every infra type tenantcloud reads or writes. A fresh scheme
// per call keeps packages free of shared mutable state.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for name, add := range map[string]func(*runtime.Scheme) error{
		"core":        clientgoscheme.AddToScheme,
		"kubevirt":    kubevirtv1.AddToScheme,
		"cdi":         cdiv1.AddToScheme,
		"cluster-api": clusterv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("adding %s types to scheme: %w", name, err)
		}
	}
	return s, nil
}
