//go:build tools

// Package tools pins the csi-resizer sidecar that hack/bin-sidecars.sh builds into bin/.
package tools

import _ "github.com/kubernetes-csi/external-resizer/cmd/csi-resizer"
