package main

import (
	"io"

	cloudprovider "k8s.io/cloud-provider"

	"github.com/tenantcloud/tenantcloud/pkg/cloud"
)

// The cloud-provider registry is process-global and panics on a second registration, so the
// provider is registered here, once, at program start, and nowhere else. The factory reads the
// provider options from the parsed flags at the moment the framework instantiates the
// provider, i.e. after flag parsing.
func init() {
	cloudprovider.RegisterCloudProvider(cloud.ProviderName, func(config io.Reader) (cloudprovider.Interface, error) {
		return cloud.Factory(flags.providerOptions())(config)
	})
}
