package controller

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
	"unicode"
)

// Volume and snapshot IDs are derived from the CSI name the CO chose, so that a retried
// CreateVolume or CreateSnapshot (after a timeout, a crash, a restart of the plugin) finds the
// object the first attempt created instead of making a second one: the name alone decides the
// infra object's name, no state is kept anywhere else.
//
// An ID is a prefix and 32 lowercase base32 characters (160 bits) of the SHA-256 of the kind,
// the cluster name and the CSI name. Including the cluster keeps two clusters sharing one
// infra namespace apart. The result is a DNS-1123 label of 35/36 characters: valid as a
// DataVolume, PVC, VolumeSnapshot and KubeVirt volume name, and short enough for labels.
const (
	// VolumeIDPrefix starts every volume ID (and so every DataVolume csi-controller creates).
	VolumeIDPrefix = "tc-"
	// SnapshotIDPrefix starts every snapshot ID (and VolumeSnapshot name).
	SnapshotIDPrefix = "tcs-"

	idHashLen = 32
	// maxNameLen bounds the CSI names accepted. The CSI spec asks COs to keep names within 128
	// bytes; the name is only hashed and kept in an annotation, so a little slack costs nothing.
	maxNameLen = 1024
	// maxIDLen is the CSI limit on identifiers COs pass back to us.
	maxIDLen = 128
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func derive(kind, prefix, cluster, name string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + cluster + "\x00" + name))
	return prefix + strings.ToLower(idEncoding.EncodeToString(sum[:]))[:idHashLen]
}

// VolumeID is the volume ID (and DataVolume name) for CSI volume name in cluster.
func VolumeID(cluster, name string) string { return derive("volume", VolumeIDPrefix, cluster, name) }

// SnapshotID is the snapshot ID (and VolumeSnapshot name) for CSI snapshot name in cluster.
func SnapshotID(cluster, name string) string {
	return derive("snapshot", SnapshotIDPrefix, cluster, name)
}

// hasIDForm reports whether id is prefix followed by idHashLen base32 characters. Anything
// else can never name an object csi-controller created, so no API call is made for it.
func hasIDForm(id, prefix string) bool {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || len(rest) != idHashLen {
		return false
	}
	for _, r := range rest {
		if !(r >= 'a' && r <= 'z') && !(r >= '2' && r <= '7') {
			return false
		}
	}
	return true
}

// IsVolumeID reports whether id has the form of a volume ID.
func IsVolumeID(id string) bool { return hasIDForm(id, VolumeIDPrefix) }

// IsSnapshotID reports whether id has the form of a snapshot ID.
func IsSnapshotID(id string) bool { return hasIDForm(id, SnapshotIDPrefix) }

// validateName checks a CSI name (CreateVolume, CreateSnapshot).
func validateName(field, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s is required", field)
	case len(name) > maxNameLen:
		return fmt.Errorf("%s %.32q… is longer than %d bytes", field, name, maxNameLen)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("%s %q contains control characters", field, name)
	}
	return nil
}

// validateID checks an identifier a CO passes back (volume_id, snapshot_id, node_id) for
// presence and sanity; whether it names one of our objects is decided by the lookup.
func validateID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s is required", field)
	case len(id) > maxIDLen:
		return fmt.Errorf("%s %.32q… is longer than %d bytes", field, id, maxIDLen)
	case strings.ContainsFunc(id, unicode.IsControl):
		return fmt.Errorf("%s %q contains control characters", field, id)
	}
	return nil
}
