// Package disks plays the block devices a KubeVirt guest sees when a volume is hot-plugged: each
// PVC is backed by a sparse file, each plug attaches that file to a loop device, and a symlink
// named the way udev names the disk inside the guest (/dev/disk/by-id) points at it. One
// directory per VM holds those links, so a test can run csi-node "inside" a given VM by pointing
// it at that directory.
//
// Faithfulness notes:
//   - The backing file belongs to the PVC, not to the attachment, so data survives unplug and
//     replug exactly like a real disk, until the PVC is deleted (Delete).
//   - virtio-blk serials are cut to 20 bytes (VIRTIO_BLK_ID_BYTES in QEMU), so the guest sees
//     /dev/disk/by-id/virtio-<first 20 bytes>. SCSI disks appear as
//     scsi-0QEMU_QEMU_HARDDISK_<serial>.
//   - A disk without a serial is plugged but gets no by-id link, as a real guest's udev creates
//     none for a virtio disk without a serial.
//   - Resizing grows the file and tells the loop driver (losetup -c), which is what a guest sees
//     after a virtio/SCSI capacity change event.
//   - Plugging one claim into two VMs is allowed (two loop devices over one file), as for an RWX
//     block volume. KubeVirt does not refuse an RWO claim at hotplug either; the attacher does.
//
// Everything needs root and loop devices; Supported says whether this host has them.
package disks
