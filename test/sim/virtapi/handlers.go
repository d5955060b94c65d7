package virtapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// Fault points. A failure armed with FailNext is answered 500 "unable to patch ...", what
// upstream returns when its write fails; a stall holds the request; latency delays it. Only
// requests that passed validation reach them.
const (
	FaultAddVolume    = "virtapi/addvolume"
	FaultRemoveVolume = "virtapi/removevolume"
)

const basePath = "/apis/" + GroupVersion + "/namespaces/{namespace}/"

func (s *Server) registerVolumeHandlers(mux *http.ServeMux) {
	mux.HandleFunc("PUT "+basePath+"virtualmachines/{name}/addvolume", s.handleAdd(s.addToVM))
	mux.HandleFunc("PUT "+basePath+"virtualmachineinstances/{name}/addvolume", s.handleAdd(s.addToVMI))
	mux.HandleFunc("PUT "+basePath+"virtualmachines/{name}/removevolume", s.handleRemove(s.removeFromVM))
	mux.HandleFunc("PUT "+basePath+"virtualmachineinstances/{name}/removevolume", s.handleRemove(s.removeFromVMI))
}

type addFunc func(ctx context.Context, namespace, name string, opts *kubevirtv1.AddVolumeOptions) *apierrors.StatusError
type removeFunc func(ctx context.Context, namespace, name string, opts *kubevirtv1.RemoveVolumeOptions) *apierrors.StatusError

// hotplugNotEnabled is upstream's answer when neither hot-plug gate is on.
const hotplugNotEnabled = "Enable DeclarativeHotplugVolumes or HotplugVolumes feature gate to use this API."

func (s *Server) handleAdd(apply addFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.gates.HotplugAPI() {
			writeStatus(w, apierrors.NewBadRequest(hotplugNotEnabled))
			return
		}
		opts := &kubevirtv1.AddVolumeOptions{}
		if serr := decodeBody(r, opts); serr != nil {
			writeStatus(w, serr)
			return
		}
		if serr := checkAddOptions(opts); serr != nil {
			writeStatus(w, serr)
			return
		}
		ns, name := r.PathValue("namespace"), r.PathValue("name")
		if serr := apply(r.Context(), ns, name, opts); serr != nil {
			klog.V(2).InfoS("virt-api refused addvolume", "namespace", ns, "name", name, "volume", opts.Name, "code", serr.ErrStatus.Code, "message", serr.ErrStatus.Message)
			writeStatus(w, serr)
			return
		}
		klog.V(2).InfoS("virt-api accepted addvolume", "namespace", ns, "name", name, "volume", opts.Name, "path", r.URL.Path)
		w.WriteHeader(http.StatusAccepted)
	}
}

func (s *Server) handleRemove(apply removeFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.gates.HotplugAPI() {
			writeStatus(w, apierrors.NewBadRequest(hotplugNotEnabled))
			return
		}
		opts := &kubevirtv1.RemoveVolumeOptions{}
		if serr := decodeBody(r, opts); serr != nil {
			writeStatus(w, serr)
			return
		}
		if serr := checkRemoveOptions(opts); serr != nil {
			writeStatus(w, serr)
			return
		}
		ns, name := r.PathValue("namespace"), r.PathValue("name")
		if serr := apply(r.Context(), ns, name, opts); serr != nil {
			klog.V(2).InfoS("virt-api refused removevolume", "namespace", ns, "name", name, "volume", opts.Name, "code", serr.ErrStatus.Code, "message", serr.ErrStatus.Message)
			writeStatus(w, serr)
			return
		}
		klog.V(2).InfoS("virt-api accepted removevolume", "namespace", ns, "name", name, "volume", opts.Name, "path", r.URL.Path)
		w.WriteHeader(http.StatusAccepted)
	}
}

// decodeBody accepts JSON or YAML; an empty body decodes to empty options (then refused for the
// missing name), as upstream.
func decodeBody(r *http.Request, into any) *apierrors.StatusError {
	defer r.Body.Close()
	if err := yaml.NewYAMLOrJSONDecoder(r.Body, 1024).Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return apierrors.NewBadRequest(fmt.Sprintf("Can not unmarshal Request body to struct, error: %s", err))
	}
	return nil
}

// writeStatus writes err as a metav1.Status, like upstream's writeError.
func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.ErrStatus.DeepCopy()
	st.Kind, st.APIVersion = "Status", "v1"
	if st.Status == "" {
		st.Status = metav1.StatusFailure
	}
	writeJSON(w, int(st.Code), st)
}

// faultStatus turns a fault-point error into the answer a failed write gets upstream.
func faultStatus(err error, what string) *apierrors.StatusError {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return apierrors.NewTimeoutError(fmt.Sprintf("request canceled while %s", what), 1)
	}
	return apierrors.NewInternalError(fmt.Errorf("unable to %s: %w", what, err))
}
