package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// perm is one (API group, resource[/subresource], verb) a Role grants: the unit the
// least-privilege proof removes.
type perm struct{ group, resource, verb string }

func (p perm) String() string {
	g := p.group
	if g == "" {
		g = "core"
	}
	return p.verb + " " + p.resource + " (" + g + ")"
}

// perms flattens rules into their single permissions, in rule order.
func perms(rules []rbacv1.PolicyRule) []perm {
	var out []perm
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if p := (perm{g, res, v}); !slices.Contains(out, p) {
						out = append(out, p)
					}
				}
			}
		}
	}
	return out
}

// rulesOf turns permissions back into rules, one rule per permission.
func rulesOf(ps []perm) []rbacv1.PolicyRule {
	rules := make([]rbacv1.PolicyRule, 0, len(ps))
	for _, p := range ps {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{p.group}, Resources: []string{p.resource}, Verbs: []string{p.verb}})
	}
	return rules
}

// grant is a rendered Role or ClusterRole the component's identity is bound to (the binding
// comes from the chart too).
type grant struct {
	cluster string        // "management" or "tenant", for the table
	admin   client.Client // to edit the role
	role    client.Object // *rbacv1.Role or *rbacv1.ClusterRole, as created
	user    string        // the identity bound to it
	ns      string        // namespace the access review asks about ("" for cluster-scoped)
	full    []perm
}

func (g *grant) setRules(ctx context.Context, ps []perm) error {
	switch r := g.role.(type) {
	case *rbacv1.Role:
		r.Rules = rulesOf(ps)
	case *rbacv1.ClusterRole:
		r.Rules = rulesOf(ps)
	}
	if err := g.admin.Update(ctx, g.role); err != nil {
		return fmt.Errorf("updating %s: %w", g.role.GetName(), err)
	}
	return nil
}

// waitAccess waits until the authorizer answers allowed=want for user doing p (RBAC changes
// reach it through informers, a moment after the update): from then on the component's calls
// see the change.
func waitAccess(ctx context.Context, admin client.Client, user, ns string, p perm, want bool) error {
	res, sub, _ := strings.Cut(p.resource, "/")
	attrs := &authorizationv1.ResourceAttributes{Namespace: ns, Verb: p.verb, Group: p.group, Resource: res, Subresource: sub}
	return waitPoll(ctx, func(ctx context.Context) (bool, error) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: attrs}}
		if err := admin.Create(ctx, sar); err != nil {
			return false, err
		}
		return sar.Status.Allowed == want, nil
	})
}

// errSetup marks a scenario error in the test's own preparation (as admin), which says
// nothing about the component's rights and fails the test instead of naming the scenario.
var errSetup = errors.New("setting up")

// waitPoll polls cond every 50 ms for at most 30 s.
func waitPoll(ctx context.Context, cond func(ctx context.Context) (bool, error)) error {
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, cond)
}

// scenario is one named thing a component must achieve; run returns an error when it cannot.
type scenario struct {
	name string
	run  func(ctx context.Context, c *component) error
}

// component is one run of a program under test: its process, its log and the audit logs
// where the apiservers record what they refused it.
type component struct {
	name  string
	log   string
	cmd   *exec.Cmd
	done  chan error
	audit []*auditTail
}

// startBinary runs bin with args, its output in a log file under dir, killed with the test
// binary if that dies first.
func startBinary(dir, name, bin string, args ...string) (*component, error) {
	f, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	// Informers LIST then WATCH, as against a management apiserver without streaming lists;
	// with client-go's default (WatchListClient) they only WATCH, so this run needs every verb
	// either way needs.
	cmd.Env = append(os.Environ(), "KUBE_FEATURE_WatchListClient=false")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &component{name: name, log: f.Name(), cmd: cmd, done: make(chan error, 1)}
	go func() {
		c.done <- cmd.Wait()
		_ = f.Close()
	}()
	return c, nil
}

// stop ends the process (SIGTERM, then SIGKILL after 20 s).
func (c *component) stop() error {
	select {
	case err := <-c.done:
		c.done <- err
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within 20s of SIGTERM", c.name)
	}
}

func (c *component) output() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// forbiddenRE matches the apiserver's RBAC refusal as client-go and klog print it.
var forbiddenRE = regexp.MustCompile(`[^\n]*is forbidden: User [^\n]*? cannot [^\n]*`)

// refused returns the first RBAC refusal of the component, or "": a 403 the apiservers
// recorded for its identities (also for calls it does not log, such as a reflector's watch),
// or one it logged.
func (c *component) refused() string {
	for _, a := range c.audit {
		if r := a.refusal(); r != "" {
			return r
		}
	}
	return forbiddenRE.FindString(c.output())
}

// auditTail reads an apiserver's audit log from where it was opened, looking for requests of
// users that were refused (403).
type auditTail struct {
	cluster *harness.Cluster
	users   []string
	offset  int64
	found   string
}

func newAuditTail(c *harness.Cluster, users ...string) (*auditTail, error) {
	st, err := os.Stat(c.AuditLog())
	if err != nil {
		return nil, err
	}
	return &auditTail{cluster: c, users: users, offset: st.Size()}, nil
}

// refusal reads the lines written since the last call and returns the first 403 for users.
func (a *auditTail) refusal() string {
	if a.found != "" {
		return a.found
	}
	f, err := os.Open(a.cluster.AuditLog())
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(a.offset, io.SeekStart); err != nil {
		return ""
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return "" // a partial last line is read again next time
		}
		a.offset += int64(len(line))
		var e harness.AuditEvent
		if json.Unmarshal(line, &e) != nil || e.ResponseStatus == nil || e.ResponseStatus.Code != 403 ||
			!slices.Contains(a.users, e.User.Username) {
			continue
		}
		a.found = fmt.Sprintf("%s apiserver: 403 for %s: %s %s", a.cluster.Name, e.User.Username, e.Key(), e.RequestURI)
		return a.found
	}
}

// alive fails when the process has exited.
func (c *component) alive() error {
	select {
	case err := <-c.done:
		c.done <- err
		return fmt.Errorf("%s exited: %v", c.name, err)
	default:
		return nil
	}
}

// await polls cond until it holds. It fails early, naming the evidence, when the component
// logs an RBAC refusal or exits: a scenario fails when the component could not do it without
// being refused, even if it would limp on by retrying.
func (c *component) await(ctx context.Context, what string, cond func(ctx context.Context) (bool, error)) error {
	var last error
	err := waitPoll(ctx, func(ctx context.Context) (bool, error) {
		if r := c.refused(); r != "" {
			return false, fmt.Errorf("refused: %s", strings.TrimSpace(r))
		}
		if err := c.alive(); err != nil {
			return false, err
		}
		ok, err := cond(ctx)
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err != nil && last != nil && !strings.Contains(err.Error(), "refused") {
		err = fmt.Errorf("%w (last error: %v)", err, last)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// proof is a least-privilege proof for one program: start runs it with the identities bound
// to grants, scenarios are what it must achieve, reset restores the world (as admin) between
// runs. unexercised lists permissions no scenario needs, with the reason; the proof fails if
// that list is wrong in either direction.
type proof struct {
	grants []*grant
	start  func(ctx context.Context) (*component, error)
	// clusters are where the grants' identities are audited.
	clusters    []*harness.Cluster
	scenarios   []scenario
	reset       func(ctx context.Context) error
	unexercised map[perm]string
}

// row is one line of the proof's table.
type row struct {
	cluster  string
	removed  perm
	scenario string
	evidence string
}

// runScenarios starts the component and runs the scenarios in order; it returns the name of
// the first one that fails and why ("" if all pass).
func (p *proof) runScenarios(t *testing.T, ctx context.Context) (string, string) {
	t.Helper()
	var tails []*auditTail
	for _, cl := range p.clusters {
		var users []string
		for _, g := range p.grants {
			users = append(users, g.user)
		}
		a, err := newAuditTail(cl, users...)
		if err != nil {
			t.Fatal(err)
		}
		tails = append(tails, a)
	}
	c, err := p.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.audit = tails
	failed, why := "", ""
	for _, sc := range p.scenarios {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := sc.run(sctx, c)
		cancel()
		if errors.Is(err, errSetup) {
			t.Fatalf("scenario %s could not be set up (not the component's failure): %v", sc.name, err)
		}
		if err != nil {
			failed, why = sc.name, err.Error()
			break
		}
	}
	if err := c.stop(); err != nil {
		t.Error(err)
	}
	if t.Failed() || os.Getenv("DEPLOY_RBAC_ONLY") != "" {
		t.Logf("%s log (%s):\n%s", c.name, c.log, tail(c.output(), 30))
	}
	if err := p.reset(ctx); err != nil {
		t.Fatalf("reset after the run: %v", err)
	}
	return failed, why
}

// run proves it: every scenario passes with the chart's rules, and removing any one permission
// makes a named scenario fail. It returns the table.
func (p *proof) run(t *testing.T, ctx context.Context) []row {
	t.Helper()
	start := time.Now()
	if failed, why := p.runScenarios(t, ctx); failed != "" {
		t.Fatalf("with the chart's rules, scenario %s failed: %s", failed, why)
	}
	t.Logf("all %d scenarios pass with the chart's rules (%s)", len(p.scenarios), time.Since(start).Round(time.Millisecond))
	for _, cl := range p.clusters {
		for _, g := range p.grants {
			if g.cluster != cl.Name {
				continue
			}
			evs, err := cl.AuditEvents(start, harness.ByUser(g.user))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s calls of %s with the chart's rules: %s", cl.Name, g.user, harness.FormatCounts(harness.CountByKey(evs)))
			break
		}
	}

	var table []row
	for _, g := range p.grants {
		for _, removed := range g.full {
			if only := os.Getenv("DEPLOY_RBAC_ONLY"); only != "" && !strings.Contains(removed.String(), only) {
				continue
			}
			rest := slices.DeleteFunc(slices.Clone(g.full), func(q perm) bool { return q == removed })
			if err := g.setRules(ctx, rest); err != nil {
				t.Fatal(err)
			}
			if err := waitAccess(ctx, g.admin, g.user, g.ns, removed, false); err != nil {
				t.Fatalf("%s still allowed after removing it: %v", removed, err)
			}
			failed, why := p.runScenarios(t, ctx)
			table = append(table, row{g.cluster, removed, failed, why})
			if err := g.setRules(ctx, g.full); err != nil {
				t.Fatal(err)
			}
			if err := waitAccess(ctx, g.admin, g.user, g.ns, removed, true); err != nil {
				t.Fatalf("%s not allowed again after restoring it: %v", removed, err)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "least-privilege table (%s):\n| cluster | permission removed | scenario that failed | evidence |\n|---|---|---|---|\n", time.Since(start).Round(time.Millisecond))
	for _, r := range table {
		sc, ev := r.scenario, shorten(r.evidence, 160)
		if sc == "" {
			sc, ev = "(none)", p.unexercised[r.removed]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.cluster, r.removed, sc, ev)
	}
	t.Log(b.String())
	for _, r := range table {
		reason, known := p.unexercised[r.removed]
		switch {
		case r.scenario == "" && !known:
			t.Errorf("removing %s (%s) made no scenario fail: the permission is not needed, or no scenario covers it", r.removed, r.cluster)
		case r.scenario != "" && known:
			t.Errorf("removing %s made %s fail, but it is listed as unexercised (%s)", r.removed, r.scenario, reason)
		}
	}
	return table
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// built builds the programs once per test binary.
var built = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "deploy-e2e-bin-")
	if err != nil {
		return "", err
	}
	return dir, harness.BuildPrograms(context.Background(), dir, nil, "ccm", "csi-controller", "csi-node", "autoscaler-provider")
})

func programs(t *testing.T) string {
	t.Helper()
	dir, err := built()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
