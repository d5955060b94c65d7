// Package autoscaler serves cluster-autoscaler's externalgrpc CloudProvider API for one tenant:
// node groups are the tenant cluster's MachineDeployments in the management cluster.
//
// Layout: pure logic (annotation parsing, bounds math, ids, template nodes, option mapping,
// instance states, delete planning) lives in files of its own with table tests; the RPC
// handlers (rpc_*.go) are thin glue over the scoped infra cache (nodegroups.go), so every answer
// comes from informers and the only API calls on the request path are the writes: the /scale
// subresource (read fresh right before it is written, for conflict safety) and the
// delete-machine annotation on Machines.
//
// Wire format: this module's Kubernetes API types are no longer protobuf-go messages, so the
// generated externalgrpc types cannot go through the stock gRPC codec (it panics). Codec (see
// wirecodec.go) encodes them byte-compatibly; servers and Go clients must use it. For the same
// reason, never format those messages with %v: their String method panics too. This proto
// version carries the template Node in nodeInfo; there is no nodeBytes field to fill.
//
// Security: the tenant controls its Nodes, hence every providerID and node name in a request.
// Each MachineDeployment, MachineSet and Machine must live in the tenant namespace, carry the
// cluster-name label AND have spec.clusterName equal to the tenant's cluster before it is read
// or changed; anything else answers as "no node group" or NotFound, never touched.
package autoscaler
