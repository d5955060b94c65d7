package autoscaler

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Bounds are a node group's replica limits from the min/max-size annotations.
type Bounds struct {
	Min, Max int32
}

// Sentinel errors of the size math; the RPC layer maps them to gRPC codes.
var (
	// ErrInvalidDelta is a delta of the wrong sign (a malformed request).
	ErrInvalidDelta = errors.New("invalid delta")
	// ErrOutOfBounds is a change that would leave the group outside its limits or below what
	// exists (a request that is well-formed but not allowed now).
	ErrOutOfBounds = errors.New("out of bounds")
)

// ParseBounds reads the min/max-size annotations. autoscaled is false when neither is set: the
// MachineDeployment is simply not a node group. With either set, an error says why the pair is
// unusable; the caller skips the group and tells the operator.
//
// As in the clusterapi provider, a missing min means 0, a max of 0 leaves nothing to scale and
// max < min is refused. A missing max is refused too rather than read as 0 ("nothing to scale"):
// someone who wrote a min clearly meant the group to be autoscaled.
func ParseBounds(annotations map[string]string) (b Bounds, autoscaled bool, err error) {
	minStr, hasMin := annotations[AnnotationMinSize]
	maxStr, hasMax := annotations[AnnotationMaxSize]
	if !hasMin && !hasMax {
		return Bounds{}, false, nil
	}
	if hasMin {
		if b.Min, err = parseSize(minStr); err != nil {
			return Bounds{}, true, fmt.Errorf("annotation %s: %w", AnnotationMinSize, err)
		}
	}
	if !hasMax {
		return Bounds{}, true, fmt.Errorf("annotation %s is missing while %s is set", AnnotationMaxSize, AnnotationMinSize)
	}
	if b.Max, err = parseSize(maxStr); err != nil {
		return Bounds{}, true, fmt.Errorf("annotation %s: %w", AnnotationMaxSize, err)
	}
	switch {
	case b.Max == 0:
		return Bounds{}, true, fmt.Errorf("annotation %s is 0: the group could never have a node", AnnotationMaxSize)
	case b.Max < b.Min:
		return Bounds{}, true, fmt.Errorf("max size %d is below min size %d", b.Max, b.Min)
	}
	return b, true, nil
}

// parseSize accepts a plain non-negative decimal that fits in int32 (the proto's type): no
// sign, spaces or exponent, so "+3", " 3" and "3e0" are all refused rather than guessed at.
func parseSize(s string) (int32, error) {
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q is not a non-negative integer", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a non-negative integer that fits in 32 bits", s)
	}
	return int32(n), nil
}

// IncreaseTarget is the new target after adding delta (> 0) to current; it may not exceed Max.
// A current size already above Max (changed by hand) still allows no increase.
func (b Bounds) IncreaseTarget(current, delta int32) (int32, error) {
	if delta <= 0 {
		return 0, fmt.Errorf("%w: increase delta must be positive, got %d", ErrInvalidDelta, delta)
	}
	next := int64(current) + int64(delta)
	if next > int64(b.Max) {
		return 0, fmt.Errorf("%w: size %d + %d would exceed the maximum %d", ErrOutOfBounds, current, delta, b.Max)
	}
	return int32(next), nil
}

// DecreaseTarget is the new target after adding delta (< 0) to current. It only drops requests
// that are not yet fulfilled, so it may not go below the registered node count. It does not
// check Min: cluster-autoscaler calls it to forget nodes that will never come, and refusing
// would leave it waiting for them forever.
func (b Bounds) DecreaseTarget(current, delta int32, registered int) (int32, error) {
	if delta >= 0 {
		return 0, fmt.Errorf("%w: decrease delta must be negative, got %d", ErrInvalidDelta, delta)
	}
	next := int64(current) + int64(delta)
	if next < int64(registered) {
		return 0, fmt.Errorf("%w: size %d %d would go below the %d registered nodes; delete nodes by name instead",
			ErrOutOfBounds, current, delta, registered)
	}
	if next < 0 {
		return 0, fmt.Errorf("%w: size %d %d would be negative", ErrOutOfBounds, current, delta)
	}
	return int32(next), nil
}

// DeleteTarget is the new target after removing n named machines from current; it may not go
// below Min.
func (b Bounds) DeleteTarget(current int32, n int) (int32, error) {
	if n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: cannot delete %d machines", ErrInvalidDelta, n)
	}
	next := int64(current) - int64(n)
	if next < int64(b.Min) {
		return 0, fmt.Errorf("%w: deleting %d machines from size %d would go below the minimum %d",
			ErrOutOfBounds, n, current, b.Min)
	}
	return int32(next), nil
}
