//go:build tools

// Package tools pins cluster-autoscaler in this module's go.mod; hack/bin-cluster-autoscaler.sh
// builds it with -tags externalgrpc (the externalgrpc cloud provider only).
package tools

import _ "k8s.io/autoscaler/cluster-autoscaler"
