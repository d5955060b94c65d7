package install

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// event is an audit event as the apiserver writes it (one JSON line).
func event(t *testing.T, user, agent string, code int) harness.AuditEvent {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"verb": "list", "userAgent": agent, "user": map[string]any{"username": user},
		"objectRef": map[string]any{"resource": "services"}, "responseStatus": map[string]any{"code": code},
	})
	if err != nil {
		t.Fatal(err)
	}
	var e harness.AuditEvent
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestJudge(t *testing.T) {
	const (
		ccmSA     = "system:serviceaccount:tenant-a:tc-ccm"
		csiNodeSA = "system:serviceaccount:kube-system:tc-csi-node"
		admin     = "tenantcloud:a:admin"
	)
	ids := Identities{
		ServiceAccounts: map[string]map[string]string{
			SideManagement: {ccmSA: "management ccm"},
			SideTenant:     {csiNodeSA: "tenant csi-node"},
		},
		TenantUser:       admin,
		SharedTenantUser: []string{"ccm", "csi-provisioner"},
	}
	allGood := func(t *testing.T) map[string][]harness.AuditEvent {
		return map[string][]harness.AuditEvent{
			SideManagement: {event(t, ccmSA, "ccm/v0.36", 200)},
			SideTenant: {
				event(t, csiNodeSA, "csi-node/v1", 200),
				event(t, admin, "ccm/v0.36 (linux/amd64)", 200),
				event(t, admin, "csi-provisioner/v5.3.0", 201),
			},
		}
	}
	for _, tc := range []struct {
		name   string
		ids    Identities
		events func(t *testing.T) map[string][]harness.AuditEvent
		want   Requests
		err    string // substring; "" = no error
	}{
		{name: "every identity made requests, none refused", ids: ids, events: allGood,
			want: Requests{"management ccm": 1, "tenant csi-node": 1, "tenant ccm": 1, "tenant csi-provisioner": 1}},
		{name: "no audited request at all fails", ids: ids,
			events: func(*testing.T) map[string][]harness.AuditEvent { return map[string][]harness.AuditEvent{} },
			err:    "no request of management ccm, tenant ccm, tenant csi-node, tenant csi-provisioner"},
		{name: "one identity silent fails", ids: ids, events: func(t *testing.T) map[string][]harness.AuditEvent {
			ev := allGood(t)
			ev[SideTenant] = ev[SideTenant][:2] // csi-provisioner made none
			return ev
		}, err: "no request of tenant csi-provisioner"},
		{name: "a ServiceAccount's 403 fails", ids: ids, events: func(t *testing.T) map[string][]harness.AuditEvent {
			ev := allGood(t)
			ev[SideManagement] = append(ev[SideManagement], event(t, ccmSA, "ccm/v0.36", 403))
			return ev
		}, err: "1 requests of the releases' identities refused: management: " + ccmSA},
		{name: "the tenant user's 401 fails even from an unknown agent", ids: ids, events: func(t *testing.T) map[string][]harness.AuditEvent {
			ev := allGood(t)
			ev[SideTenant] = append(ev[SideTenant], event(t, admin, "curl/8", 401))
			return ev
		}, err: "refused: tenant: " + admin + " (curl/8) list services 401"},
		{name: "the same username on the other side is not the identity", ids: ids, events: func(t *testing.T) map[string][]harness.AuditEvent {
			ev := allGood(t)
			// the ccm ServiceAccount's name in the tenant is someone else: neither counted nor judged
			ev[SideTenant] = append(ev[SideTenant], event(t, ccmSA, "x", 403))
			return ev
		}, want: Requests{"management ccm": 1, "tenant csi-node": 1, "tenant ccm": 1, "tenant csi-provisioner": 1}},
		{name: "other users are ignored", ids: ids, events: func(t *testing.T) map[string][]harness.AuditEvent {
			ev := allGood(t)
			ev[SideManagement] = append(ev[SideManagement], event(t, "system:kube-scheduler", "kube-scheduler/v1", 403))
			return ev
		}, want: Requests{"management ccm": 1, "tenant csi-node": 1, "tenant ccm": 1, "tenant csi-provisioner": 1}},
		{name: "no identities fails", ids: Identities{}, events: allGood, err: "no identity to check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.ids.Judge(tc.events(t))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Judge: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Judge error %v, want one containing %q", err, tc.err)
			}
			if tc.err == "" && got.String() != tc.want.String() {
				t.Errorf("Judge counted %s, want %s", got, tc.want)
			}
		})
	}
}
