// Package crash kills tenantcloud components after each API write in turn and checks that a
// restarted component converges with nothing leaked.
//
// Each component runs in-process on the harness's real apiservers and the simulator, with
// every rest.Config it is given wrapped by a Switch (switch.go): the Switch counts the
// component's writes to either cluster (POST/PUT/PATCH/DELETE, virt-api subresources included,
// Events left out) and, once the Nth has been answered, refuses everything else and ends the
// component — the write landed, the component never learned it did. For each operation the
// driver (driver_test.go) first runs it uninterrupted to count its writes W, then W more
// times from the same start state, killing after write N = 1..W; a fresh component then does
// what its caller does after a crash — the CSI sidecars repeat the call, cluster-autoscaler
// re-reads the target size or deletes the still-present node again, the service controller
// re-queues — and the world is compared with the operation's desired end state: anything
// missing (including a replica count off by one: a lost or doubled scale) is a failure to
// converge, anything extra (DataVolumes, claims, hot-plugged volumes on the VM or VMI, infra
// Services and EndpointSlices, deletion marks on Machines) is leaked. The apiservers' audit logs confirm each killed run: the writes they
// recorded from it lie between the ones the Switch saw answered and the ones it let through.
//
// Scenarios: csi-controller CreateVolume, ControllerPublishVolume, ControllerUnpublishVolume,
// ControllerExpandVolume, DeleteVolume (volumes_test.go); the ccm's LoadBalancer create with
// externalTrafficPolicy Cluster and Local and delete, through the upstream service controller
// (lb_test.go); autoscaler-provider NodeGroupIncreaseSize, NodeGroupDecreaseTargetSize and
// NodeGroupDeleteNodes of two nodes (scale_test.go). The figures are printed as a table at the
// end of a -v run.
//
//	go test -count=1 -v ./test/e2e/crash
package crash
