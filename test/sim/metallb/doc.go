// Package metallb runs the real MetalLB controller (bin/metallb-controller, built from
// go.universe.tf/metallb v0.16.1 by `make bin`) against a harness apiserver, as the IPAM for
// Services of type LoadBalancer in the management cluster.
//
// Nothing here re-implements MetalLB: the annotation semantics (metallb.io/address-pool,
// metallb.io/loadBalancerIPs, metallb.io/allow-shared-ip and their deprecated
// metallb.universe.tf/* forms), pool selection, IP sharing and refusals are the upstream
// binary's. This package only supplies what a Deployment would: a namespace, a ServiceAccount,
// the controller's own Pod object (MetalLB reads it at start-up to own its ConfigurationState),
// free ports, and a process that is always stopped.
//
// The Pod object is never scheduled (no scheduler or kubelet runs on the management cluster);
// MetalLB only reads it. The controller uses no memberlist (that is the speaker's) and runs
// with webhooks disabled, so IPAddressPools are not validated at admission as they would be
// with the real webhook: an invalid pool is reported in the controller's log and its
// ConfigurationState instead of being refused by the apiserver.
package metallb
