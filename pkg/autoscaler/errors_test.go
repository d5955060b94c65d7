package autoscaler

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The package's own errors decide first; infra API errors map as everywhere (grpcerr).
func TestGRPCError(t *testing.T) {
	md := schema.GroupResource{Group: "cluster.x-k8s.io", Resource: "machinedeployments"}
	for _, tt := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("group md-0: %w", errGroupNotFound), codes.NotFound},
		{ErrInvalidDelta, codes.InvalidArgument},
		{ErrNotInGroup, codes.InvalidArgument},
		{ErrOutOfBounds, codes.FailedPrecondition},
		{errPaused, codes.FailedPrecondition},
		{errChanged, codes.Aborted},
		{apierrors.NewConflict(md, "md-0", errChanged), codes.Aborted},
		{apierrors.NewNotFound(md, "md-0"), codes.NotFound},
		{apierrors.NewServiceUnavailable("down"), codes.Unavailable},
		{apierrors.NewInternalError(fmt.Errorf("etcd")), codes.Unavailable},
		{apierrors.NewForbidden(md, "md-0", fmt.Errorf("no")), codes.PermissionDenied},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{fmt.Errorf("boom"), codes.Internal},
	} {
		if got := status.Code(grpcError("IncreaseSize", tt.err)); got != tt.want {
			t.Errorf("grpcError(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}
