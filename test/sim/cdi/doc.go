// Package cdi simulates, against a real apiserver, what turns a CDI DataVolume into a bound
// LINSTOR volume on a management cluster: CDI's DataVolume controllers and populators, the
// LINSTOR CSI driver's external-provisioner, -resizer and -snapshotter, the snapshot-controller,
// and the parts of kube-controller-manager they rely on (PV binder and reclaim, pvc-/pv-
// protection, garbage collection of a deleted DataVolume's claim), since none of those run in
// the harness.
//
// Phases, names, annotations, conditions, events and sizes follow the upstream sources
// (CDI v1.65, linstor-csi, external-provisioner/-resizer, external-snapshotter, Kubernetes
// 1.36); what is simplified or left out is listed in NOTES.md. Timing is compressed to
// Options.PhaseDelay / ResizeDelay, and each step can be delayed, failed or held through a
// fault.Injector at the points named by the Fault* constants.
//
// Setup registers everything with a controller-runtime manager (see test/sim/simmgr); run one
// simulator per cluster, as two would act on the same objects.
package cdi
