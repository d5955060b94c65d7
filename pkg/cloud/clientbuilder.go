package cloud

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	cloudprovider "k8s.io/cloud-provider"
)

// ClientBuilder hands out tenant clients made from one rest config. Each gets the name it is
// asked for appended to its user agent (so the tenant's audit log tells the controllers apart)
// and a rate limiter of its own (client-go builds one per clientset from QPS and Burst), as the
// cloud-controller-manager framework's simple client builder does.
type ClientBuilder struct {
	// RESTConfig is copied, never modified.
	RESTConfig *rest.Config
}

var _ cloudprovider.ControllerClientBuilder = ClientBuilder{}

// Config is a copy of the rest config with name in its user agent.
func (b ClientBuilder) Config(name string) (*rest.Config, error) {
	return rest.AddUserAgent(rest.CopyConfig(b.RESTConfig), name), nil
}

// ConfigOrDie is Config; it cannot fail.
func (b ClientBuilder) ConfigOrDie(name string) *rest.Config {
	cfg, _ := b.Config(name)
	return cfg
}

// Client is a clientset for Config(name).
func (b ClientBuilder) Client(name string) (kubernetes.Interface, error) {
	cfg, err := b.Config(name)
	if err != nil {
		return nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("tenant client %s: %w", name, err)
	}
	return c, nil
}

// ClientOrDie is Client, panicking on an error (a rest config that cannot make a clientset),
// as the interface's callers in k8s.io/cloud-provider expect.
func (b ClientBuilder) ClientOrDie(name string) kubernetes.Interface {
	c, err := b.Client(name)
	if err != nil {
		panic(err)
	}
	return c
}
