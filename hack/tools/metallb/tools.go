//go:build tools

// Package tools pins the MetalLB controller that hack/bin-metallb.sh builds
// into bin/metallb-controller.
package tools

import _ "go.universe.tf/metallb/controller"
