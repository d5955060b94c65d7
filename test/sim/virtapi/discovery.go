package virtapi

import (
	"encoding/json"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// The aggregated API this server provides, as KubeVirt registers it.
const (
	Group          = "subresources.kubevirt.io"
	Version        = "v1"
	GroupVersion   = Group + "/" + Version
	APIServiceName = Version + "." + Group
)

// The subresources served. Upstream lists many more (console, vnc, migrate, ...); listing
// only what is implemented keeps discovery honest about this server.
var apiResources = []metav1.APIResource{
	{Name: "virtualmachines/addvolume", Namespaced: true},
	{Name: "virtualmachines/removevolume", Namespaced: true},
	{Name: "virtualmachineinstances/addvolume", Namespaced: true},
	{Name: "virtualmachineinstances/removevolume", Namespaced: true},
}

func apiGroup() metav1.APIGroup {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: GroupVersion, Version: Version}
	return metav1.APIGroup{
		TypeMeta:         metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
		Name:             Group,
		Versions:         []metav1.GroupVersionForDiscovery{gv},
		PreferredVersion: gv,
	}
}

// registerDiscovery serves what kube-apiserver's aggregator reads to mark the APIService
// Available and to build discovery: root paths, the group list, the group, the resource list.
func registerDiscovery(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, metav1.RootPaths{Paths: []string{"/apis", "/apis/" + Group, "/apis/" + GroupVersion}})
	})
	mux.HandleFunc("GET /apis", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, metav1.APIGroupList{
			TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
			Groups:   []metav1.APIGroup{apiGroup()},
		})
	})
	mux.HandleFunc("GET /apis/"+Group, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, apiGroup())
	})
	mux.HandleFunc("GET /apis/"+GroupVersion, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, metav1.APIResourceList{
			TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: GroupVersion,
			APIResources: apiResources,
		})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		klog.ErrorS(err, "Writing virt-api response")
	}
}
