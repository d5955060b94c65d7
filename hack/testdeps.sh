#!/usr/bin/env bash
# The Debian packages the tests run, in one place: .ci/run and `make test` both call this.
# As root it installs what is missing; otherwise it stops with the exact apt-get line, so a
# new machine never runs the storage suites without mkfs.xfs and reports them green.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin # where Debian keeps mkfs and losetup; not on a user's PATH

# command:package — a package is needed when its command is missing.
pairs=(
	mkfs.ext4:e2fsprogs resize2fs:e2fsprogs # csi-node formats and grows ext4
	mkfs.xfs:xfsprogs xfs_growfs:xfsprogs   # … and xfs
	losetup:mount mount:mount umount:mount  # the simulated guest disks are loop devices
	blkid:util-linux fsck:util-linux        # k8s.io/mount-utils probes and checks filesystems
	git:git make:make
	# real nodes and images (test/harness/node, test/e2e/images): DESIGN.md §4b
	containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins
	ip:iproute2 iptables:iptables nsenter:util-linux # each real node's namespaces; kube-proxy's rules
	docker-registry:docker-registry
)

# Real nodes pass bridged pod traffic through iptables (a pod reaching another pod of its node
# through a Service ClusterIP, test/harness/node): the br_netfilter module.
if [[ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
	if ((EUID != 0)); then
		echo "testdeps: br_netfilter is not loaded; as root: modprobe br_netfilter" >&2
		exit 1
	fi
	if ! command -v modprobe >/dev/null 2>&1; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kmod </dev/null
	fi
	modprobe br_netfilter
fi

need=()
for pair in "${pairs[@]}"; do
	pkg=${pair#*:}
	command -v "${pair%%:*}" >/dev/null 2>&1 || [[ " ${need[*]} " == *" $pkg "* ]] || need+=("$pkg")
done
((${#need[@]})) || exit 0

if ((EUID != 0)); then
	echo "testdeps: missing packages; install them as root:" >&2
	echo "  apt-get update && apt-get install -y --no-install-recommends ${need[*]}" >&2
	exit 1
fi
echo "testdeps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null
