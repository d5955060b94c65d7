#!/usr/bin/env bash
# Builds the CSI sidecars the management chart runs next to csi-controller (csi-provisioner,
# csi-attacher, csi-resizer, csi-snapshotter) and the tenant's snapshot-controller into
# bin/NAME-VERSION, static (CGO_ENABLED=0) with main.version set so --version prints VERSION,
# and points bin/NAME at each. make images packages them; test/e2e/deploy checks the chart's
# sidecar flags against them. Each versioned binary that exists is skipped.
#
# Each comes from its own tools module under hack/tools/NAME: their Kubernetes libraries
# (0.33 for the provisioner and resizer, 0.37 for the attacher and snapshotter) do not resolve
# together. The proxy serves these exact versions; it refuses (403) their version lists.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$root/bin
tools=$root/hack/tools

# NAME MODULE VERSION: the binary is MODULE/cmd/NAME, built in hack/tools/$MODDIR, whose
# go.mod must require MODULE VERSION (checked below; update both together).
SIDECARS=(
	"csi-provisioner csi-provisioner github.com/kubernetes-csi/external-provisioner/v5 v5.3.0"
	"csi-attacher csi-attacher github.com/kubernetes-csi/external-attacher/v4 v4.13.0"
	"csi-resizer csi-resizer github.com/kubernetes-csi/external-resizer v1.14.0"
	"csi-snapshotter csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8 v8.7.0"
	"snapshot-controller csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8 v8.7.0"
)

die() { echo "bin-sidecars: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

export GOWORK=off CGO_ENABLED=0
mkdir -p "$bin"
tmp=
trap 'rm -f "$tmp"' EXIT

for entry in "${SIDECARS[@]}"; do
	read -r name moddir module version <<<"$entry"
	target=$bin/$name-$version
	if [[ ! -x $target ]]; then
		command -v go >/dev/null || die "go is not on PATH"
		mod=$tools/$moddir
		grep -Eq "^(require)?[[:space:]]+$module $version\$" "$mod/go.mod" ||
			die "hack/tools/$moddir/go.mod does not require $module $version; update both together"
		start=$(now)
		echo "bin-sidecars: building $target"
		tmp=$target.tmp.$$
		go build -C "$mod" -trimpath -ldflags "-s -w -X main.version=$version" -o "$tmp" "$module/cmd/$name" ||
			die "building $module/cmd/$name failed (go.sum must be complete: run 'go mod tidy' in hack/tools/$moddir)"
		# Every sidecar prints "<argv0> <version>" and exits 0.
		out=$("$tmp" --version 2>&1) || die "the built $name does not run: $out"
		[[ $out == *" $version" ]] || die "the built $name reports version '$out', want $version"
		mv "$tmp" "$target"
		echo "bin-sidecars: built $target in $(since "$start") ($(du -k "$target" | cut -f1) KiB)"
	fi
	if [[ $(readlink "$bin/$name" 2>/dev/null) != "$name-$version" ]]; then
		ln -sfn "$name-$version" "$bin/$name"
	fi
done
