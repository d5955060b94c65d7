// Package infra is the management-cluster view of ONE tenant: the only package that talks to the
// infra API. Every lookup is scoped to the tenant's namespace and cluster name, so a value the
// tenant controls (a providerID, a node ID, a volume handle) can never reach another tenant's
// objects: anything outside the scope is reported as NotFound, exactly like an object that does
// not exist, so a hostile tenant cannot even probe for foreign names.
//
// Nothing here hands out the underlying client, cache or an unscoped reader (TestNoRawAccess
// fails if a method does): other packages read and write only through these scoped methods —
// objects tenantcloud created (*Owned), objects others create for this cluster (*InCluster,
// Scale, CreateEvent) — and the Client is itself a scoped client.Reader for lookups through
// field indexes (IndexField).
package infra
