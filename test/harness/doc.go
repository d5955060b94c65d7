// Package harness starts the two real control planes every integration test runs against: a
// management cluster (with the KubeVirt, CDI, Cluster API, CAPK, MetalLB and VolumeSnapshot
// CRDs) and a tenant cluster. Both are kube-apiserver + etcd processes built by `make bin` and
// driven by controller-runtime's envtest. Components under test get kubeconfig files, as in
// production.
//
// Start them once per test binary from TestMain (see Main); a start costs seconds and
// hundreds of MB of memory per cluster.
//
// Outages: Cluster.StopAPIServer / KillAPIServer take a cluster's kube-apiserver away while
// etcd keeps running, and StartAPIServer brings it back on the same endpoint with the same
// certificates, so every client reconnects without new credentials (see apiserver.go).
package harness
