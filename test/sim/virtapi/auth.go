package virtapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// frontProxy is how kube-apiserver tells aggregated servers who may proxy to them and where
// the caller's identity travels: the requestheader settings it publishes in
// kube-system/extension-apiserver-authentication.
type frontProxy struct {
	clientCAs    *x509.CertPool
	allowedNames []string
	userHeaders  []string
	groupHeaders []string
	extraPrefix  []string
}

// loadFrontProxy reads the requestheader settings, waiting for the apiserver's post-start hook
// to publish them. Upstream virt-api reads the same ConfigMap.
func loadFrontProxy(ctx context.Context, c client.Reader) (*frontProxy, error) {
	var cm corev1.ConfigMap
	key := client.ObjectKey{Namespace: "kube-system", Name: "extension-apiserver-authentication"}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, key, &cm)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && cm.Data["requestheader-client-ca-file"] != "", err
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	fp := &frontProxy{clientCAs: x509.NewCertPool()}
	if !fp.clientCAs.AppendCertsFromPEM([]byte(cm.Data["requestheader-client-ca-file"])) {
		return nil, fmt.Errorf("%s: requestheader-client-ca-file holds no certificate", key)
	}
	for field, dst := range map[string]*[]string{
		"requestheader-allowed-names":        &fp.allowedNames,
		"requestheader-username-headers":     &fp.userHeaders,
		"requestheader-group-headers":        &fp.groupHeaders,
		"requestheader-extra-headers-prefix": &fp.extraPrefix,
	} {
		if raw := cm.Data[field]; raw != "" {
			if err := json.Unmarshal([]byte(raw), dst); err != nil {
				return nil, fmt.Errorf("%s: parsing %s: %w", key, field, err)
			}
		}
	}
	if len(fp.userHeaders) == 0 || len(fp.groupHeaders) == 0 {
		return nil, fmt.Errorf("%s: no requestheader username/group headers: the apiserver is not configured as a front proxy", key)
	}
	return fp, nil
}

// verifyPeer rejects, during the TLS handshake, a client certificate that chains to the
// front-proxy CA but is not one of the allowed proxy names (upstream virt-api does the same).
// An empty allow-list accepts any name the CA signed, as kube-apiserver itself does.
func (fp *frontProxy) verifyPeer(_ [][]byte, chains [][]*x509.Certificate) error {
	if len(chains) == 0 || len(chains[0]) == 0 || len(fp.allowedNames) == 0 {
		return nil
	}
	if cn := chains[0][0].Subject.CommonName; !slices.Contains(fp.allowedNames, cn) {
		return fmt.Errorf("client certificate CN %q is not an allowed front proxy %v", cn, fp.allowedNames)
	}
	return nil
}

// noAuthPaths are served to anyone, as upstream: what the aggregator needs for discovery and
// availability checks.
var noAuthPaths = map[string]bool{
	"/": true, "/apis": true, "/healthz": true, "/openapi/v2": true, "/openapi/v3": true,
	"/apis/" + Group: true, "/apis/" + GroupVersion: true,
	"/apis/" + GroupVersion + "/version": true, "/apis/" + GroupVersion + "/healthz": true,
}

// errNotAuthenticated is the reason given when no verified client certificate came with the
// request, i.e. it did not come through kube-apiserver.
var errNotAuthenticated = errors.New("request is not authenticated")

// authorizer asks the management apiserver whether the proxied caller may do what the
// request path says.
type authorizer struct {
	fp  *frontProxy
	sar client.Client
}

// authorize returns whether the request may proceed and, if not, why. Only a failing
// SubjectAccessReview call is an error. Like upstream, a refused request is answered 401 with
// the reason as plain text (see withAuth).
func (a *authorizer) authorize(r *http.Request) (bool, string, error) {
	if noAuthPaths[r.URL.Path] {
		return true, "", nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false, errNotAuthenticated.Error(), nil
	}
	review, err := a.accessReview(r)
	if err != nil {
		return false, err.Error(), nil
	}
	if err := a.sar.Create(r.Context(), review); err != nil {
		return false, "", fmt.Errorf("creating SubjectAccessReview: %w", err)
	}
	if !review.Status.Allowed {
		klog.V(2).InfoS("virt-api denied request", "user", review.Spec.User, "path", r.URL.Path, "reason", review.Status.Reason)
		return false, review.Status.Reason, nil
	}
	return true, "", nil
}

// accessReview builds the review for /apis/<group>/<version>/namespaces/<ns>/<resource>/<name>/<subresource>.
func (a *authorizer) accessReview(r *http.Request) (*authorizationv1.SubjectAccessReview, error) {
	user := firstHeader(r.Header, a.fp.userHeaders)
	if len(user) == 0 {
		return nil, errors.New("a valid user header is required for authorization")
	}
	groups := firstHeader(r.Header, a.fp.groupHeaders)
	if groups == nil {
		return nil, errors.New("a valid group header is required for authorization")
	}
	parts := strings.Split(r.URL.Path, "/")
	if len(parts) < 9 || parts[1] != "apis" || parts[4] != "namespaces" {
		return nil, fmt.Errorf("unknown api endpoint: %s", r.URL.Path)
	}
	resource := parts[6]
	if resource != "virtualmachines" && resource != "virtualmachineinstances" {
		return nil, fmt.Errorf("unknown resource type %s", resource)
	}
	verb, err := rbacVerb(r.Method, parts[7])
	if err != nil {
		return nil, err
	}
	return &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user[0],
			Groups: groups,
			Extra:  extras(r.Header, a.fp.extraPrefix),
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace:   parts[5],
				Verb:        verb,
				Group:       parts[2],
				Version:     parts[3],
				Resource:    resource,
				Name:        parts[7],
				Subresource: parts[8],
			},
		},
	}, nil
}

func firstHeader(h http.Header, names []string) []string {
	for _, n := range names {
		if v, ok := h[http.CanonicalHeaderKey(n)]; ok {
			return v
		}
	}
	return nil
}

// extras decodes X-Remote-Extra-<key> headers; keys are lower-cased and %-unescaped as
// kube-apiserver's requestheader authenticator does.
func extras(h http.Header, prefixes []string) map[string]authorizationv1.ExtraValue {
	out := map[string]authorizationv1.ExtraValue{}
	for _, prefix := range prefixes {
		for k, v := range h {
			if len(k) > len(prefix) && strings.EqualFold(k[:len(prefix)], prefix) {
				key := strings.ToLower(k[len(prefix):])
				if unescaped, err := url.PathUnescape(key); err == nil {
					key = unescaped
				}
				out[key] = v
			}
		}
	}
	return out
}

// rbacVerb maps an HTTP method to the RBAC verb, per the Kubernetes authorization docs.
func rbacVerb(method, name string) (string, error) {
	switch method {
	case http.MethodPost:
		return "create", nil
	case http.MethodGet, http.MethodHead:
		if name != "" {
			return "get", nil
		}
		return "list", nil
	case http.MethodPut:
		return "update", nil
	case http.MethodPatch:
		return "patch", nil
	case http.MethodDelete:
		if name != "" {
			return "delete", nil
		}
		return "deletecollection", nil
	default:
		return "", fmt.Errorf("unknown http verb in request: %v", method)
	}
}

// withAuth runs authorize before next. Refusals are 401 with the reason as plain text, exactly
// what upstream virt-api's restful filter writes; a failed review is a bare 500.
func (a *authorizer) withAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allowed, reason, err := a.authorize(r)
		switch {
		case err != nil:
			klog.ErrorS(err, "virt-api authorization failed", "path", r.URL.Path)
			w.WriteHeader(http.StatusInternalServerError)
		case !allowed:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(reason))
		default:
			next.ServeHTTP(w, r)
		}
	})
}
