//go:build tools

// Package tools pins the csi-snapshotter sidecar that hack/bin-sidecars.sh builds into bin/.
package tools

import (
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter"
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
)
