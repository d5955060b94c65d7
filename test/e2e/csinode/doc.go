// Package csinode tests the csi-node plugin on real block devices: sparse files on loop
// devices, named in a per-VM by-id directory exactly as a guest's udev names hot-plugged
// KubeVirt disks, driven over real gRPC on unix sockets. Real mkfs, mount, resize2fs and
// xfs_growfs run, so the tests need root and loop devices and skip otherwise.
package csinode
