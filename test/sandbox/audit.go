package main

import (
	"context"
	"errors"
)

// storyRefusals is the final audit check (install.Release.CheckAudit): in both apiservers'
// audit logs since the sandbox started, no request of the charts' identities — the management
// pods' ServiceAccounts in the infra namespace, csi-node's in the tenant, the tenant
// kubeconfig Cluster API gives the management pods (told apart by user agent) — was refused,
// so the charts' roles were enough for every story, and each of them made some: one with none
// did not run as deployed, and "none refused" would hold for nothing.
func (s *sandbox) storyRefusals(context.Context) error {
	if s.release == nil {
		return errors.New("audit check: the charts were not installed")
	}
	got, err := s.release.CheckAudit(start)
	if err != nil {
		return err
	}
	ok("audit logs: requests of every chart identity (%s), none refused", got)
	return nil
}
