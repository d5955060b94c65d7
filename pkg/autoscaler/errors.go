package autoscaler

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenantcloud/tenantcloud/pkg/grpcerr"
)

// Request-state errors of the RPC layer.
var (
	errPaused = errors.New("MachineDeployment is paused")
	// errChanged is a size that moved between our check and our write, by someone else.
	errChanged = errors.New("target size changed concurrently")
)

// grpcError turns an internal error into a status with a code cluster-autoscaler (and a human)
// can act on: this package's own errors first, then the infra API's the way every tenantcloud
// gRPC server maps them (grpcerr). op names the RPC.
func grpcError(op string, err error) error {
	code := grpcerr.Code(err)
	switch {
	case errors.Is(err, errGroupNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrInvalidDelta), errors.Is(err, ErrNotInGroup):
		code = codes.InvalidArgument
	case errors.Is(err, ErrOutOfBounds), errors.Is(err, errPaused):
		code = codes.FailedPrecondition
	case errors.Is(err, errChanged):
		code = codes.Aborted
	}
	return status.Errorf(code, "%s: %v", op, err)
}
