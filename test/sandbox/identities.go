package main

import (
	"context"
	"errors"
	"fmt"
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

// chartIdentities renders the management chart with bin/helm and the operator's values
// (values/management.yaml), applies its ServiceAccounts, Roles and bindings into the tenant's
// infra namespace (the tenant chart's came with helm install), and gives each component a
// client certificate for its ServiceAccount's username: every component then runs with
// exactly the rights a real install gives it. It returns the rendered objects.
func (s *sandbox) chartIdentities(ctx context.Context) ([]*unstructured.Unstructured, error) {
	out, err := chartrender.Helm(ctx, s.bin("helm"), "template", chartRelease, chartrender.ChartDir("tenantcloud"),
		"--namespace", infraNS, "--values", valuesFile("management.yaml"))
	if err != nil {
		return nil, err
	}
	mobjs, err := chartrender.Decode(out)
	if err != nil {
		return nil, fmt.Errorf("decoding the management chart: %w", err)
	}
	if err := applyKinds(ctx, s.env.Management.Client, infraNS, mobjs); err != nil {
		return nil, err
	}
	const tenantNS = "kube-system"
	user := func(c *harness.Cluster, ns, component string) (string, error) {
		u, err := c.AddUser("system:serviceaccount:" + ns + ":" + chartRelease + "-" + component)
		if err != nil {
			return "", err
		}
		return u.Kubeconfig, nil
	}
	s.creds = map[string]credentials{}
	for _, c := range []struct {
		name          string
		infra, tenant bool
	}{
		{"ccm", true, true},
		{"csi-controller", true, false},
		{"autoscaler-provider", true, true},
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
		s.creds[c.name] = cr
	}
	return mobjs, nil
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

// storyRefusals checks the audit logs of both apiservers: no request of any chart identity
// (the components' and the csi-node pods' ServiceAccounts) was refused, so the charts' roles
// were enough for every story.
func (s *sandbox) storyRefusals(context.Context) error {
	if s.creds == nil {
		return errors.New("audit check: the components ran without their chart identities, so the charts' roles were not tried")
	}
	var refused []string
	calls := map[string]int{} // by component (the ServiceAccount's name without the release)
	for _, c := range []*harness.Cluster{s.env.Management, s.env.Tenant} {
		evs, err := c.AuditEvents(start, func(e harness.AuditEvent) bool {
			return strings.HasPrefix(e.User.Username, "system:serviceaccount:") && strings.Contains(e.User.Username, ":"+chartRelease+"-")
		})
		if err != nil {
			return err
		}
		for _, e := range evs {
			_, sa, _ := strings.Cut(e.User.Username, ":"+chartRelease+"-")
			calls[sa]++
			if e.ResponseStatus != nil && e.ResponseStatus.Code == 403 {
				refused = append(refused, fmt.Sprintf("%s: %s %s", c.Name, e.User.Username, e.Key()))
			}
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("the charts' roles refused %d requests: %s", len(refused), strings.Join(refused, "; "))
	}
	// Every component makes requests as its chart identity in the stories: one with none
	// audited did not run as it (or the filter or the logs are wrong), and "none refused"
	// would hold for nothing.
	var counts []string
	for _, component := range []string{"ccm", "csi-controller", "autoscaler-provider", "cluster-autoscaler", "csi-node"} {
		if calls[component] == 0 {
			return fmt.Errorf("audit check: no request of %s's chart identity in the audit logs (seen: %v)", component, calls)
		}
		counts = append(counts, fmt.Sprintf("%s %d", component, calls[component]))
	}
	ok("audit logs: requests of the chart identities (%s), none refused", strings.Join(counts, ", "))
	return nil
}
