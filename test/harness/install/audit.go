package install

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TenantUserAgents are the user-agent prefixes by which the tenant apiserver's audit log tells
// apart the management containers that share the tenant kubeconfig (one identity, as Cluster
// API gives one kubeconfig per cluster), by container name: client-go's default agent starts
// with the binary's name, autoscaler-provider sets its own (pkg/autoscaler). CheckAudit
// expects requests from each of these the management pods run.
var TenantUserAgents = map[string]string{
	"ccm":                 "ccm/",
	"csi-provisioner":     "csi-provisioner/",
	"csi-attacher":        "csi-attacher/",
	"csi-resizer":         "csi-resizer/",
	"csi-snapshotter":     "csi-snapshotter/",
	"cluster-autoscaler":  "cluster-autoscaler/",
	"autoscaler-provider": "tenantcloud-autoscaler-provider/",
}

// Audited sides of the installation, as CheckAudit's identity keys start.
const (
	SideManagement = "management"
	SideTenant     = "tenant"
)

// Requests counts audited requests per identity: "management ccm", "tenant csi-node", …
type Requests map[string]int

// String is "management ccm=12, tenant csi-node=3", sorted.
func (q Requests) String() string { return harness.FormatCounts(q) }

// Identities are who the releases' pods act as, per side: ServiceAccount usernames mapped to
// the identity key CheckAudit counts under, and the tenant kubeconfig's user, whose requests
// are told apart by TenantUserAgents for the containers listed in SharedTenantUser.
type Identities struct {
	// ServiceAccounts maps side → username → identity key.
	ServiceAccounts map[string]map[string]string
	// TenantUser is the tenant kubeconfig's username; SharedTenantUser the containers using it.
	TenantUser       string
	SharedTenantUser []string
}

// identities derives the Identities from the releases' pods: every management pod's
// ServiceAccount that mounts a token (cluster-autoscaler talks only to the tenant), csi-node's
// in the tenant, and the tenant kubeconfig's containers.
func (r *Release) identities() Identities {
	ids := Identities{ServiceAccounts: map[string]map[string]string{SideManagement: {}, SideTenant: {}}, TenantUser: r.tenantUser}
	for _, p := range r.ManagementPods {
		for _, c := range p.Spec.Containers {
			if _, ok := TenantUserAgents[c.Name]; ok {
				ids.SharedTenantUser = append(ids.SharedTenantUser, c.Name)
			}
		}
		if p.Spec.AutomountServiceAccountToken != nil && !*p.Spec.AutomountServiceAccountToken {
			continue
		}
		ids.ServiceAccounts[SideManagement][serviceAccountUser(p)] = SideManagement + " " + p.Labels["app.kubernetes.io/component"]
	}
	for _, p := range r.TenantPods {
		ids.ServiceAccounts[SideTenant][serviceAccountUser(p)] = SideTenant + " " + p.Labels["app.kubernetes.io/component"]
	}
	return ids
}

func serviceAccountUser(p corev1.Pod) string {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return "system:serviceaccount:" + p.Namespace + ":" + sa
}

// CheckAudit reads both apiservers' audit logs from since and judges the requests of the
// identities the releases run as (Identities.Judge).
func (r *Release) CheckAudit(since time.Time) (Requests, error) {
	ids := r.identities()
	events := map[string][]harness.AuditEvent{}
	for side, c := range map[string]*harness.Cluster{SideManagement: r.env.Management, SideTenant: r.env.Tenant} {
		evs, err := c.AuditEvents(since, func(e harness.AuditEvent) bool {
			_, ok := ids.ServiceAccounts[side][e.User.Username]
			return ok || (side == SideTenant && e.User.Username == ids.TenantUser)
		})
		if err != nil {
			return nil, fmt.Errorf("audit check: %w", err)
		}
		events[side] = evs
	}
	return ids.Judge(events)
}

// Judge counts each identity's requests among the audited events of each side and fails if
// any of them was refused (401 or 403) or any identity made none at all: "none refused" would
// then hold for nothing, because the component ran as someone else or the logs were not read.
// Events of users that are none of the identities are ignored.
func (ids Identities) Judge(events map[string][]harness.AuditEvent) (Requests, error) {
	got := Requests{}
	for _, byUser := range ids.ServiceAccounts {
		for _, key := range byUser {
			got[key] = 0
		}
	}
	for _, c := range ids.SharedTenantUser {
		got[SideTenant+" "+c] = 0
	}
	if len(got) == 0 {
		return nil, errors.New("audit check: the releases have no pods, so no identity to check")
	}
	var refused []string
	sides := make([]string, 0, len(events))
	for side := range events {
		sides = append(sides, side)
	}
	sort.Strings(sides)
	for _, side := range sides {
		for _, e := range events[side] {
			key, ok := ids.ServiceAccounts[side][e.User.Username]
			if !ok && side == SideTenant && ids.TenantUser != "" && e.User.Username == ids.TenantUser {
				ok = true
				key = "" // the shared user's request counts only if its agent names a container
				for _, c := range ids.SharedTenantUser {
					if strings.HasPrefix(e.UserAgent, TenantUserAgents[c]) {
						key = SideTenant + " " + c
					}
				}
			}
			if !ok {
				continue
			}
			if key != "" {
				got[key]++
			}
			if e.ResponseStatus != nil && (e.ResponseStatus.Code == 401 || e.ResponseStatus.Code == 403) {
				refused = append(refused, fmt.Sprintf("%s: %s (%s) %s %d", side, e.User.Username, e.UserAgent, e.Key(), e.ResponseStatus.Code))
			}
		}
	}
	if len(refused) > 0 {
		return got, fmt.Errorf("audit check: %d requests of the releases' identities refused: %s", len(refused), strings.Join(refused, "; "))
	}
	var none []string
	for k, n := range got {
		if n == 0 {
			none = append(none, k)
		}
	}
	if len(none) > 0 {
		sort.Strings(none)
		return got, fmt.Errorf("audit check: no request of %s in the audit logs (seen: %s)", strings.Join(none, ", "), got)
	}
	return got, nil
}
