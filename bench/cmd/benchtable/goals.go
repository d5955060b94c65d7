package main

import "regexp"

// goal is one bound bench/README.md states for a scenario. It bounds every metric of the
// scenario's result line whose whole name matches metric; the figure shown is the largest.
type goal struct {
	text   string // the goal as the README and issue 17 state it
	metric *regexp.Regexp
	max    float64
	// absentIsZero: the metric is reported only when non-zero (API calls by verb and
	// resource: a list-* column appears only when the component listed), so no column is 0.
	absentIsZero bool
}

// scenario is one line of bench/README.md's scenario table (sub-benchmarks spelled out), with
// the package it runs in. pending says why a promised scenario has no benchmark yet.
type scenario struct {
	pkg, name string
	goals     []goal
	pending   string
}

func atMost(text, metric string, max float64) goal {
	return goal{text: text, metric: regexp.MustCompile("^(?:" + metric + ")$"), max: max}
}

func none(text, metric string) goal {
	g := atMost(text, metric, 0)
	g.absentIsZero = true
	return g
}

// Memory goals from issue 17: one set of components runs per tenant, so memory multiplies by
// the number of tenants.
const (
	controlPlaneMB = 40 // ccm, csi-controller, autoscaler-provider
	nodeMB         = 20 // csi-node, on every tenant node
)

var (
	lbPropagation = []goal{
		atMost("infra IP → tenant IP p99 ≤ 300 ms", "(burst|one)-p99-ms", 300),
		none("no LIST during the burst or idle", "(idle-)?(mgmt|tenant)-list-.*"),
		atMost("idle: 0 requests", "idle-(mgmt|tenant)-calls/min", 0),
		atMost("ccm RSS ≤ 40 MB", "ccm-rss-MB", controlPlaneMB),
	}
	volumeOverhead = []goal{
		atMost("CreateVolume overhead p99 ≤ 200 ms", "create-overhead-p99-ms", 200),
		atMost("ControllerPublishVolume overhead p99 ≤ 200 ms", "publish-overhead-p99-ms", 200),
	}
)

// scenarios is what bench/README.md promises, in its order; TestScenariosMatchREADME keeps the
// two (and the repository's Benchmark functions) in step.
var scenarios = []scenario{
	{pkg: "test/e2e/csinode", name: "StagePublish/ext4"},
	{pkg: "test/e2e/csinode", name: "StagePublish/xfs"},
	{pkg: "cmd/csi-node", name: "IdleRSS", goals: []goal{atMost("csi-node RSS ≤ 20 MB", "csi-node-rss-MB", nodeMB)}},
	{pkg: "pkg/autoscaler", name: "CacheLookups", goals: []goal{atMost("every call p99 ≤ 1 ms", ".*-p99-ms", 1)}},
	{pkg: "test/e2e/autoscaler", name: "Loop1000Nodes", goals: []goal{
		atMost("every call p99 ≤ 1 ms", ".*-p99-ms", 1),
		atMost("0 requests during CA's loop", "loop-(mgmt|tenant)-calls/min", 0),
		atMost("autoscaler-provider RSS ≤ 40 MB", "autoscaler-provider-rss-MB", controlPlaneMB),
	}},
	{pkg: "test/e2e/autoscaler", name: "BulkScaleDown", goals: []goal{
		// One loop of the benchmark's cluster-autoscaler (--scan-interval=1s).
		atMost("target within one CA loop (1 s) of the last DeleteNodes", "bulk-target-after-last-call-p99-ms", 1000),
	}},
	{pkg: "test/e2e/ccm", name: "LBPropagation/services=100", goals: lbPropagation},
	{pkg: "test/e2e/ccm", name: "LBPropagation/services=1000", goals: lbPropagation},
	{pkg: "test/e2e/csicontroller", name: "VolumeOverhead/concurrent=1", goals: volumeOverhead},
	{pkg: "test/e2e/csicontroller", name: "VolumeOverhead/concurrent=50", goals: volumeOverhead},
	{pkg: "test/e2e/csicontroller", name: "IdleVolumes", goals: []goal{
		atMost("idle: 0 requests", "idle-calls/min", 0),
		atMost("csi-controller RSS ≤ 40 MB", "csi-controller-rss-MB", controlPlaneMB),
	}},
	{pkg: "test/e2e/storage", name: "PVCToPodRunning"},
	{pkg: "test/e2e/outage", name: "CCMFailover", goals: []goal{
		// takeoverBound in test/e2e/outage: lease duration 4 s + two jittered retry periods
		// (2 × 2.2 s) + 1 s for the requests.
		atMost("standby leads ≤ 9.4 s after the last renewal", "expiry-p99-ms", 9400),
	}},
	{pkg: "test/e2e/outage", name: "OutageRecovery", goals: []goal{
		atMost("operations converge ≤ 10 s after a 60 s management-apiserver outage", "converge-p99-ms", 10000),
		// The same bound on the part that is tenantcloud's: the real MetalLB controller's own
		// reconnection (client-go's backoff, 15–60 s after a minute's outage) left out.
		atMost("the same, MetalLB's own reconnection left out", "converge-excl-metallb-p99-ms", 10000),
	}},
	{pkg: "test/e2e/autoscaler", name: "ScaleUp100", goals: []goal{
		// "Node pools that grow to 100 nodes in minutes" (VK Cloud's managed Kubernetes), read
		// as at most 5; and of that, autoscaler-provider's answers a negligible part.
		atMost("0 → 100 Ready Nodes, every pod scheduled ≤ 5 min", "scale-up-100-ms", 300000),
		atMost("autoscaler-provider's share ≤ 1 %", "provider-share-%", 1),
	}},
}
