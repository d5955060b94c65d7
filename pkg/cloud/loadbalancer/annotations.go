package loadbalancer

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// MetalLB annotations (MetalLB v0.16 reads these and still accepts the metallb.universe.tf/
// spelling of each).
const (
	AnnAddressPool     = "metallb.io/address-pool"
	AnnLoadBalancerIPs = "metallb.io/loadBalancerIPs"
	AnnAllowSharedIP   = "metallb.io/allow-shared-ip"

	deprecatedPrefix = "metallb.universe.tf/"
)

// managedAnnotations are the infra annotations this package decides; any other annotation on
// the infra Service (MetalLB's own ip-allocated-from-pool, an operator's) is left as it is.
var managedAnnotations = []string{
	AnnAddressPool, AnnLoadBalancerIPs, AnnAllowSharedIP,
	deprecated(AnnAddressPool), deprecated(AnnLoadBalancerIPs), deprecated(AnnAllowSharedIP),
}

func deprecated(key string) string {
	return deprecatedPrefix + strings.TrimPrefix(key, "metallb.io/")
}

// Policy turns what a tenant Service asks for into the MetalLB annotations of its infra
// Service. It is an allow-list: only the pool, requested addresses and sharing key are ever
// read from the tenant, each checked against what the operator granted; every other tenant
// annotation is dropped.
type Policy struct {
	LB    config.LoadBalancer
	Scope infra.Scope
}

// Annotations returns the infra MetalLB annotations for svc, or a *Refusal.
func (p Policy) Annotations(svc *corev1.Service) (map[string]string, error) {
	out := map[string]string{}

	pool, err := tenantValue(svc, AnnAddressPool)
	if err != nil {
		return nil, err
	}
	switch {
	case pool != "" && !p.LB.PoolAllowed(pool):
		return nil, refuse(ReasonPoolNotAllowed, "address pool %q is not granted to this cluster (allowed: %s)", pool, p.allowedPools())
	case pool != "":
		out[AnnAddressPool] = pool
	case p.LB.DefaultPool != "":
		// Always pinning a pool keeps MetalLB from picking an auto-assign pool, or a pool that
		// merely contains a requested address, that the operator never granted this tenant.
		out[AnnAddressPool] = p.LB.DefaultPool
	}

	ips, err := p.requestedIPs(svc)
	if err != nil {
		return nil, err
	}
	if ips != "" {
		out[AnnLoadBalancerIPs] = ips
	}

	key, err := tenantValue(svc, AnnAllowSharedIP)
	if err != nil {
		return nil, err
	}
	if key != "" {
		out[AnnAllowSharedIP] = SharedIPKey(p.Scope, key)
	}
	return out, nil
}

func (p Policy) allowedPools() string {
	set := map[string]bool{}
	for _, n := range p.LB.AllowedPools {
		set[n] = true
	}
	if p.LB.DefaultPool != "" {
		set[p.LB.DefaultPool] = true
	}
	if len(set) == 0 {
		return "none"
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// tenantValue reads key from svc under its current or deprecated MetalLB spelling; both set
// to different values is ambiguous and refused rather than guessed.
func tenantValue(svc *corev1.Service, key string) (string, error) {
	cur, hasCur := svc.Annotations[key]
	old, hasOld := svc.Annotations[deprecated(key)]
	cur, old = strings.TrimSpace(cur), strings.TrimSpace(old)
	if hasCur && hasOld && cur != old {
		return "", refuse(ReasonInvalidRequest, "annotations %s=%q and %s=%q disagree", key, cur, deprecated(key), old)
	}
	if hasCur {
		return cur, nil
	}
	return old, nil
}

// requestedIPs merges the loadBalancerIPs annotation and the deprecated spec.loadBalancerIP
// into MetalLB's comma-separated form, checking each address against the granted ranges.
func (p Policy) requestedIPs(svc *corev1.Service) (string, error) {
	ann, err := tenantValue(svc, AnnLoadBalancerIPs)
	if err != nil {
		return "", err
	}
	specIP := strings.TrimSpace(svc.Spec.LoadBalancerIP)
	var raw []string
	switch {
	case ann != "" && specIP != "":
		raw = strings.Split(ann, ",")
		if len(raw) != 1 || strings.TrimSpace(raw[0]) != specIP {
			return "", refuse(ReasonInvalidRequest, "spec.loadBalancerIP %q and annotation %s=%q disagree", specIP, AnnLoadBalancerIPs, ann)
		}
	case ann != "":
		raw = strings.Split(ann, ",")
	case specIP != "":
		raw = []string{specIP}
	default:
		return "", nil
	}
	var addrs []netip.Addr
	for _, s := range raw {
		s = strings.TrimSpace(s)
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return "", refuse(ReasonInvalidRequest, "requested load-balancer address %q is not an IP address", s)
		}
		a = a.Unmap()
		for _, b := range addrs {
			if b.Is4() == a.Is4() {
				return "", refuse(ReasonInvalidRequest, "at most one requested address per IP family, got %s and %s", b, a)
			}
		}
		if !p.LB.IPAllowed(a) {
			return "", refuse(ReasonIPNotAllowed, "requested address %s is outside the ranges granted to this cluster", a)
		}
		addrs = append(addrs, a)
	}
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	return strings.Join(strs, ","), nil
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// maxReadableKey bounds the readable form of a sharing key; longer or unusual keys are hashed.
const maxReadableKey = 63

// SharedIPKey scopes a tenant's MetalLB sharing key to the tenant: MetalLB lets any two
// Services with equal keys share an address, across namespaces, so the raw key would let one
// tenant join another's IP. The result is "<infra namespace>.<cluster>.<key>"; neither a
// namespace nor a cluster name (DNS labels) can contain a dot, so no two tenants can produce
// the same prefix. A key that is long or not plain is replaced by a hash of itself; a clash
// between a hashed and a literal key could only happen within one tenant, which may share its
// own addresses anyway.
func SharedIPKey(scope infra.Scope, key string) string {
	prefix := scope.Namespace + "." + scope.ClusterName + "."
	if plainKey.MatchString(key) && len(prefix)+len(key) <= maxReadableKey {
		return prefix + key
	}
	sum := sha256.Sum256([]byte(key))
	return prefix + "sha256-" + hex.EncodeToString(sum[:12])
}
