package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// chartRelease is the Helm release name the sandbox renders the charts as.
const chartRelease = "tc"

// credentials are one component's kubeconfigs ("" = none needed).
type credentials struct{ infra, tenant string }

// rbacKinds are the rendered objects the sandbox applies: the charts' identities and roles.
var rbacKinds = map[string]bool{"ServiceAccount": true, "Role": true, "RoleBinding": true, "ClusterRole": true, "ClusterRoleBinding": true}

// chartIdentities renders both charts with bin/helm, applies their ServiceAccounts, Roles and
// bindings (management chart into the tenant's infra namespace, tenant chart into the tenant's
// kube-system), and gives each component a client certificate for its ServiceAccount's
// username: every component then runs with exactly the rights a real install gives it.
func (s *sandbox) chartIdentities(ctx context.Context) (map[string]credentials, error) {
	helm := s.bin("helm")
	if _, err := os.Stat(helm); err != nil {
		return nil, fmt.Errorf("%s not built (hack/bin-helm.sh): %w", helm, err)
	}
	mobjs, err := chartrender.Template(ctx, helm, "tenantcloud", chartRelease, infraNS,
		"clusterName="+clusterName, "config.storage.defaultStorageClass="+infraSC,
		"config.loadBalancer.allowedPools={"+poolName+"}", "ccm.nodeZones=true")
	if err != nil {
		return nil, err
	}
	const tenantNS = "kube-system"
	tobjs, err := chartrender.Template(ctx, helm, "tenantcloud-tenant", chartRelease, tenantNS,
		"clusterName="+clusterName, "infraNamespace="+infraNS)
	if err != nil {
		return nil, err
	}
	if err := applyKinds(ctx, s.env.Management.Client, infraNS, mobjs); err != nil {
		return nil, err
	}
	if err := applyKinds(ctx, s.env.Tenant.Client, tenantNS, tobjs); err != nil {
		return nil, err
	}
	user := func(c *harness.Cluster, ns, component string) (string, error) {
		u, err := c.AddUser("system:serviceaccount:" + ns + ":" + chartRelease + "-" + component)
		if err != nil {
			return "", err
		}
		return u.Kubeconfig, nil
	}
	creds := map[string]credentials{}
	for _, c := range []struct {
		name          string
		infra, tenant bool
	}{
		{"ccm", true, true},
		{"csi-controller", true, false},
		{"autoscaler-provider", true, true},
		{"csi-node", false, true},
		{"cluster-autoscaler", false, true},
	} {
		var cr credentials
		if c.infra {
			if cr.infra, err = user(s.env.Management, infraNS, c.name); err != nil {
				return nil, err
			}
		}
		if c.tenant {
			if cr.tenant, err = user(s.env.Tenant, tenantNS, c.name); err != nil {
				return nil, err
			}
		}
		creds[c.name] = cr
	}
	return creds, nil
}

// applyKinds creates the rendered RBAC objects on c, namespaced ones in ns.
func applyKinds(ctx context.Context, c client.Client, ns string, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		if !rbacKinds[o.GetKind()] {
			continue
		}
		o, _, err := chartrender.Placed(c, ns, o)
		if err != nil {
			return err
		}
		if err := c.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// storyRefusals checks the audit logs of both apiservers: no request of any component's
// identity was refused, so the charts' roles were enough for every story.
func (s *sandbox) storyRefusals(context.Context) error {
	if s.creds == nil {
		return errors.New("audit check: the components ran without their chart identities, so the charts' roles were not tried")
	}
	var refused []string
	calls := 0
	for _, c := range []*harness.Cluster{s.env.Management, s.env.Tenant} {
		evs, err := c.AuditEvents(start, func(e harness.AuditEvent) bool {
			return strings.HasPrefix(e.User.Username, "system:serviceaccount:") && strings.Contains(e.User.Username, ":"+chartRelease+"-")
		})
		if err != nil {
			return err
		}
		calls += len(evs)
		for _, e := range evs {
			if e.ResponseStatus != nil && e.ResponseStatus.Code == 403 {
				refused = append(refused, fmt.Sprintf("%s: %s %s", c.Name, e.User.Username, e.Key()))
			}
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("the charts' roles refused %d requests: %s", len(refused), strings.Join(refused, "; "))
	}
	if calls == 0 {
		// Every story makes requests as a chart identity: none audited means the filter or
		// the logs are wrong, and "none refused" would hold for nothing.
		return errors.New("audit check: no request of the components' chart identities in the audit logs")
	}
	ok("audit logs: %d requests of the components' chart identities, none refused", calls)
	return nil
}
