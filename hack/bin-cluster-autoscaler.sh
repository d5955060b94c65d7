#!/usr/bin/env bash
# Builds the real cluster-autoscaler, with only its externalgrpc cloud provider
# (-tags externalgrpc), into bin/cluster-autoscaler-$CA_VERSION-static and points
# bin/cluster-autoscaler at it. test/e2e/autoscaler runs it against the
# autoscaler-provider; make images packages it. Static (CGO_ENABLED=0): its image has no C
# library. Skipped when the versioned binary exists (the "-static" suffix keys it apart from
# the cgo builds earlier versions of this script left in bin/).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod=$root/hack/tools/cluster-autoscaler
bin=$root/bin

# Must match hack/tools/cluster-autoscaler/go.mod (checked below): the pseudo-version whose
# externalgrpc protos the product go.mod pins. Its main package reports 1.33.0.
CA_VERSION=v0.0.0-20250613073258-1959f5f61f6c
# The apis module its go.mod requires; see the replace in hack/tools/cluster-autoscaler/go.mod.
APIS_VERSION=v0.0.0-20240627115740-d52e4b9665d7
apis_module=k8s.io/autoscaler/cluster-autoscaler/apis

die() { echo "bin-cluster-autoscaler: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

target=$bin/cluster-autoscaler-$CA_VERSION-static
link() {
	if [[ $(readlink "$bin/cluster-autoscaler" 2>/dev/null) != "${target##*/}" ]]; then
		ln -sfn "${target##*/}" "$bin/cluster-autoscaler"
	fi
}

if [[ -x $target ]]; then
	link
	exit 0
fi

command -v go >/dev/null || die "go is not on PATH"
grep -q "^	k8s.io/autoscaler/cluster-autoscaler $CA_VERSION\$" "$mod/go.mod" ||
	die "hack/tools/cluster-autoscaler/go.mod does not require k8s.io/autoscaler/cluster-autoscaler $CA_VERSION; update both together"
grep -q "^	$apis_module $APIS_VERSION\$" "$mod/go.mod" ||
	die "hack/tools/cluster-autoscaler/go.mod does not require $apis_module $APIS_VERSION; update both together"

start=$(now)
echo "bin-cluster-autoscaler: building $target"
export GOWORK=off GONOSUMDB=k8s.io/autoscaler
mkdir -p "$bin"
tmp=$target.tmp.$$
apis=$bin/cluster-autoscaler-apis
trap 'rm -rf "$tmp" "$apis.tmp.$$"' EXIT

# The apis replacement: the published module with its v1beta1 packages moved to v1 (package
# clause, import paths, Version/GroupVersion strings, V1beta1 identifiers), plus the two pod
# annotation keys v1 added. Regenerated on every build, so it always matches APIS_VERSION.
src=$(go mod download -json "$apis_module@$APIS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d $src ]] || die "cannot download $apis_module@$APIS_VERSION"
rm -rf "$apis.tmp.$$"
cp -r "$src" "$apis.tmp.$$"
chmod -R u+w "$apis.tmp.$$"
find "$apis.tmp.$$" -depth -type d -name v1beta1 -execdir mv v1beta1 v1 \;
p=$apis_module/provisioningrequest
find "$apis.tmp.$$" -name '*.go' -exec perl -0pi -e '
	s/^package v1beta1$/package v1/m;
	s{^(\s*)"('"$p"'/[^"]*)/v1beta1"}{$1v1beta1 "$2/v1"}mg;
	s{^(\s*)(\w+) "('"$p"'/[^"]*)/v1beta1"}{$1$2 "$3/v1"}mg;
	s{(import )"('"$p"'/[^"]*)/v1beta1"}{$1v1beta1 "$2/v1"}g;
	s{('"$p"'/[^"]*)/v1beta1/}{$1/v1/}g;
	s/V1beta1/V1/g;
	s/Version: "v1beta1"/Version: "v1"/g;
	s/GroupVersion = "v1beta1"/GroupVersion = "v1"/g;
	s{"autoscaling\.x-k8s\.io/v1beta1"}{"autoscaling.x-k8s.io/v1"}g;
' {} +
cat >"$apis.tmp.$$/provisioningrequest/autoscaling.x-k8s.io/v1/annotations.go" <<'GO'
package v1

// Added by hack/bin-cluster-autoscaler.sh: the v1 API has these, v1beta1 did not.
const (
	// ProvisioningRequestPodAnnotationKey is a key used to annotate pods consuming provisioning request.
	ProvisioningRequestPodAnnotationKey = "autoscaling.x-k8s.io/consume-provisioning-request"
	// ProvisioningClassPodAnnotationKey is a key used to add annotation about Provisioning Class.
	ProvisioningClassPodAnnotationKey = "autoscaling.x-k8s.io/provisioning-class-name"
)
GO
rm -rf "$apis"
mv "$apis.tmp.$$" "$apis"

CGO_ENABLED=0 go build -C "$mod" -tags externalgrpc -trimpath -ldflags "-s -w" -o "$tmp" k8s.io/autoscaler/cluster-autoscaler ||
	die "building k8s.io/autoscaler/cluster-autoscaler failed (go.sum must be complete: build once with GOFLAGS=-mod=mod in hack/tools/cluster-autoscaler)"
help=$("$tmp" --help 2>&1 || true) # pflag's --help exits 2
grep -q -- --cloud-config <<<"$help" || die "the built cluster-autoscaler does not run: $help"
mv "$tmp" "$target"
link
echo "bin-cluster-autoscaler: built $target in $(since "$start")"
