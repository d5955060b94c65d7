// Package kubeconfig turns a component's configured kubeconfig path into a client config.
package kubeconfig

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig reads the kubeconfig at path; an empty path means the pod's own ServiceAccount
// (in-cluster config), which is how every component finds the cluster it runs in.
func RESTConfig(path string) (*rest.Config, error) {
	if path == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", path)
}
