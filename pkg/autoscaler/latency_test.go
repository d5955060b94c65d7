package autoscaler_test

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"

	"github.com/tenantcloud/tenantcloud/bench/stats"
)

// BenchmarkCacheLookups measures the calls cluster-autoscaler makes every loop, answered from
// the caches, in-process (the provider's own cost, without gRPC) and over gRPC on loopback
// TCP, as p50/p99 metrics. Default size 20 groups × 10 nodes; AUTOSCALER_LATENCY_GROUPS=100
// gives the 1,000 nodes / 100 groups. The end-to-end figure against the real binary is
// test/e2e/autoscaler's BenchmarkLoop1000Nodes.
func BenchmarkCacheLookups(b *testing.B) {
	groups, perGroup := 20, 10
	if v := os.Getenv("AUTOSCALER_LATENCY_GROUPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("AUTOSCALER_LATENCY_GROUPS: %v", err)
		}
		groups = n
	}
	f := newFixture(b)
	var providerIDs []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for g := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("g%03d", g)
			md := f.md(name, mdOpts{replicas: int32(perGroup), annotations: bounds("0", "100")})
			ms := f.ms(md, name+"-abc")
			for i := range perGroup {
				pid := f.pid(fmt.Sprintf("%s-%d", name, i))
				f.machine(ms, fmt.Sprintf("%s-m%d", name, i), machineOpts{providerID: pid, registered: true, nodeRef: true})
				mu.Lock()
				providerIDs = append(providerIDs, pid)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	cl := f.start()
	ctx := f.ctx
	id := f.group("g000")

	calls := []struct {
		name   string
		local  func() error
		remote func() error
	}{
		{"NodeGroupForNode",
			func() error {
				_, err := f.prov.NodeGroupForNode(ctx, &protos.NodeGroupForNodeRequest{Node: realNode(providerIDs[len(providerIDs)/2])})
				return err
			},
			func() error {
				_, err := cl.NodeGroupForNode(ctx, &protos.NodeGroupForNodeRequest{Node: realNode(providerIDs[len(providerIDs)/2])})
				return err
			}},
		{"NodeGroups",
			func() error { _, err := f.prov.NodeGroups(ctx, &protos.NodeGroupsRequest{}); return err },
			func() error { _, err := cl.NodeGroups(ctx, &protos.NodeGroupsRequest{}); return err }},
		{"NodeGroupTargetSize",
			func() error {
				_, err := f.prov.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: id})
				return err
			},
			func() error {
				_, err := cl.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: id})
				return err
			}},
		{"NodeGroupNodes",
			func() error { _, err := f.prov.NodeGroupNodes(ctx, &protos.NodeGroupNodesRequest{Id: id}); return err },
			func() error { _, err := cl.NodeGroupNodes(ctx, &protos.NodeGroupNodesRequest{Id: id}); return err }},
	}
	resp, err := cl.NodeGroups(ctx, &protos.NodeGroupsRequest{})
	if err != nil || len(resp.GetNodeGroups()) != groups {
		b.Fatalf("%d groups, %v", len(resp.GetNodeGroups()), err)
	}
	// A p99 needs well over 100 samples per call: each iteration makes callsPerIteration of
	// each, after one untimed round that opens the connection and warms the caches' indexes.
	const callsPerIteration = 100
	for _, c := range calls {
		if err := errors.Join(c.local(), c.remote()); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]stats.Latencies, 2*len(calls))
	for b.Loop() {
		for range callsPerIteration {
			for i, c := range calls {
				for j, call := range []func() error{c.local, c.remote} {
					start := time.Now()
					if err := call(); err != nil {
						b.Fatal(err)
					}
					lat[2*i+j].Since(start)
				}
			}
		}
	}
	for i, c := range calls {
		lat[2*i].Report(b, strings.ToLower(c.name)+"-inprocess")
		lat[2*i+1].Report(b, strings.ToLower(c.name)+"-grpc")
	}
}
