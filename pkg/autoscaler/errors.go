package autoscaler

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Request-state errors of the RPC layer.
var (
	errPaused = errors.New("MachineDeployment is paused")
	// errChanged is a size that moved between our check and our write, by someone else.
	errChanged = errors.New("target size changed concurrently")
)

// grpcError turns an internal error into a status with a code cluster-autoscaler (and a human)
// can act on. op names the RPC.
func grpcError(op string, err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, errGroupNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrInvalidDelta), errors.Is(err, ErrNotInGroup):
		code = codes.InvalidArgument
	case errors.Is(err, ErrOutOfBounds), errors.Is(err, errPaused):
		code = codes.FailedPrecondition
	case errors.Is(err, errChanged), apierrors.IsConflict(err):
		code = codes.Aborted
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case apierrors.IsTooManyRequests(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsServerTimeout(err), apierrors.IsTimeout(err):
		code = codes.Unavailable
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		code = codes.PermissionDenied
	}
	return status.Errorf(code, "%s: %v", op, err)
}
