#!/usr/bin/env bash
# Builds the real MetalLB controller (go.universe.tf/metallb/controller) into
# bin/metallb-controller-$METALLB_VERSION and points bin/metallb-controller at
# it. The harness runs it against its management kube-apiserver as the IPAM
# for LoadBalancer Services. Skipped when the versioned binary exists.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod=$root/hack/tools/metallb
bin=$root/bin

# Must match hack/tools/metallb/go.mod (checked below). v0.16.2 does not
# resolve through the module proxy.
METALLB_VERSION=v0.16.1

die() { echo "bin-metallb: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

target=$bin/metallb-controller-$METALLB_VERSION
link() {
	if [[ $(readlink "$bin/metallb-controller" 2>/dev/null) != "metallb-controller-$METALLB_VERSION" ]]; then
		ln -sfn "metallb-controller-$METALLB_VERSION" "$bin/metallb-controller"
	fi
}

if [[ -x $target ]]; then
	link
	exit 0
fi

command -v go >/dev/null || die "go is not on PATH"
grep -q "^require go.universe.tf/metallb $METALLB_VERSION\$" "$mod/go.mod" ||
	die "hack/tools/metallb/go.mod does not require go.universe.tf/metallb $METALLB_VERSION; update both together"

start=$(now)
echo "bin-metallb: building $target"
export GOWORK=off
mkdir -p "$bin"
tmp=$target.tmp.$$
trap 'rm -f "$tmp"' EXIT
go build -C "$mod" -trimpath -ldflags "-s -w" -o "$tmp" go.universe.tf/metallb/controller ||
	die "building go.universe.tf/metallb/controller failed (go.sum must be complete: run 'go mod tidy' in hack/tools/metallb)"
"$tmp" --help >/dev/null 2>&1 || die "the built controller does not run"
mv "$tmp" "$target"
link
echo "bin-metallb: built $target in $(since "$start")"
