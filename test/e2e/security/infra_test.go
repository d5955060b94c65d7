package security_test

import (
	"testing"

	"github.com/tenantcloud/tenantcloud/test/infrastate"
)

// snapshot reads the infra state of both tenant namespaces: what no refused request may change.
func (w *world) snapshot(t *testing.T) infrastate.State {
	t.Helper()
	s, err := infrastate.Take(w.ctx, w.mgmt, infraNS, otherNS)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
