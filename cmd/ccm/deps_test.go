package main

import (
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestLean keeps out of the ccm what it does not run and what made most of its resident
// memory (issue 17): the cloud-controller-manager command and the apiserver's serving stack it
// brings (app linked 1,413 packages, 184 of k8s.io/apiserver; the binary's pages were ≈53 MB of
// its 77 MB RSS), and gRPC, which only the CSI and autoscaler servers use (pkg/metrics/grpcmetrics).
func TestLean(t *testing.T) {
	framework := []string{"k8s.io/cloud-provider/app", "k8s.io/cloud-provider/options", "k8s.io/controller-manager", "k8s.io/apiserver", "github.com/spf13/cobra"}
	harness.ForbidDeps(t, ".", append(framework, "google.golang.org/grpc")...)
}
