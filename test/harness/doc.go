// Package harness starts the two real control planes every integration test runs against: a
// management cluster (with the KubeVirt, CDI, Cluster API, CAPK, MetalLB and VolumeSnapshot
// CRDs) and a tenant cluster. Both are kube-apiserver + etcd processes built by `make bin` and
// driven by controller-runtime's envtest. Components under test get kubeconfig files, as in
// production.
//
// Start them once per test binary from TestMain (see Main); a start costs seconds and
// hundreds of MB of memory per cluster.
package harness
