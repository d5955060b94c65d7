// Package registration serves the kubelet's plugin-registration API
// (k8s.io/kubelet/pkg/apis/pluginregistration/v1) for the CSI driver: what the
// node-driver-registrar sidecar does, built into csi-node for clusters that cannot run that
// sidecar. The kubelet watches <kubelet dir>/plugins_registry for sockets; on a new one it asks
// GetInfo for the driver's name and CSI endpoint, registers the driver (NodeGetInfo on that
// endpoint, then the CSINode entry and the Node's csi.volume.kubernetes.io/nodeid annotation)
// and reports the outcome through NotifyRegistrationStatus.
//
// As the registrar does, a failed registration ends the program (the pod restarts and the
// kubelet retries on the new socket), and the socket is removed on shutdown, which makes the
// kubelet deregister the driver.
package registration

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// SupportedVersions are the CSI versions the kubelet may speak to the driver; the kubelet
// accepts a driver offering 1.x.
var SupportedVersions = []string{"1.0.0"}

// SocketPath is the registration socket of driver in the kubelet's plugins_registry dir,
// named as node-driver-registrar names it, so switching between the two replaces one socket.
func SocketPath(registryDir, driver string) string {
	return filepath.Join(registryDir, driver+"-reg.sock")
}

// Server answers the kubelet's registration calls for one driver.
type Server struct {
	registerapi.UnimplementedRegistrationServer
	driver   string
	endpoint string
	refused  chan error
}

// New returns the registration server of driver whose CSI socket the kubelet reaches at
// kubeletEndpoint (a path on the node, not inside the plugin's container).
func New(driver, kubeletEndpoint string) *Server {
	return &Server{driver: driver, endpoint: kubeletEndpoint, refused: make(chan error, 1)}
}

// GetInfo tells the kubelet which driver this is and where its CSI socket is.
func (s *Server) GetInfo(ctx context.Context, _ *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	klog.FromContext(ctx).Info("Kubelet asked for the plugin's info", "driver", s.driver, "endpoint", s.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.driver,
		Endpoint:          s.endpoint,
		SupportedVersions: SupportedVersions,
	}, nil
}

// NotifyRegistrationStatus receives the kubelet's verdict; a refusal ends Run.
func (s *Server) NotifyRegistrationStatus(ctx context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		klog.FromContext(ctx).Info("Registered with the kubelet", "driver", s.driver)
	} else {
		err := fmt.Errorf("the kubelet refused to register driver %s: %s", s.driver, st.GetError())
		klog.FromContext(ctx).Error(err, "Registration failed")
		select {
		case s.refused <- err:
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Run serves the registration socket in registryDir until ctx ends (nil, socket removed) or
// the kubelet refuses the registration (that error).
func (s *Server) Run(ctx context.Context, registryDir string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- tccsi.Serve(ctx, "unix://"+SocketPath(registryDir, s.driver), func(r grpc.ServiceRegistrar) {
			registerapi.RegisterRegistrationServer(r, s)
		})
	}()
	select {
	case err := <-served:
		if err != nil {
			return fmt.Errorf("serving plugin registration: %w", err)
		}
		return nil
	case err := <-s.refused:
		cancel()
		return errors.Join(err, <-served)
	}
}
