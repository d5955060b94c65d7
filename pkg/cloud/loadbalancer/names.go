package loadbalancer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Component is the tenantcloud.io/component label value of every infra object this package
// creates; quotas and garbage collection count only objects carrying it.
const Component = "ccm"

// Labels naming the tenant Service an infra object stands for. Namespace and name are for
// people and for finding slices of a Service that is already gone; the UID is what ties an
// infra object to one incarnation of the tenant Service.
const (
	LabelServiceNamespace = "tenantcloud.io/service-namespace"
	LabelServiceName      = "tenantcloud.io/service-name"
	LabelServiceUID       = "tenantcloud.io/service-uid"
)

// ServiceNamePrefix starts every infra Service name, so operators can tell them apart from
// CAPK's and their own Services in the tenant namespace.
const ServiceNamePrefix = "tc-lb-"

var canonicalUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// InfraServiceName derives the infra Service name from the tenant Service UID: the prefix plus
// the UID's 32 hex digits (38 characters, a DNS-1123 label). The UID rather than the tenant's
// namespace/name keeps the name short, fixed-length and different for a re-created Service.
// A UID that is not a canonical UUID (apiservers always assign one) is hashed instead, so the
// result is a valid name for any input.
func InfraServiceName(uid types.UID) (string, error) {
	s := strings.ToLower(string(uid))
	if s == "" {
		return "", errors.New("tenant Service has no UID yet")
	}
	if canonicalUID.MatchString(s) {
		return ServiceNamePrefix + strings.ReplaceAll(s, "-", ""), nil
	}
	sum := sha256.Sum256([]byte(uid))
	return ServiceNamePrefix + hex.EncodeToString(sum[:16]), nil
}

// EndpointSliceName is the infra EndpointSlice of one address family of infra Service
// service (≤ 38 + 5 characters).
func EndpointSliceName(service string, family corev1.IPFamily) string {
	return service + "-" + strings.ToLower(string(family))
}

// tenantLabels identify the tenant Service svc on infra objects.
func tenantLabels(svc *corev1.Service) map[string]string {
	return map[string]string{
		LabelServiceNamespace: svc.Namespace,
		LabelServiceName:      svc.Name,
		LabelServiceUID:       string(svc.UID),
	}
}
