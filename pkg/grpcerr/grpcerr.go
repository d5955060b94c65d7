// Package grpcerr maps errors of the Kubernetes API (and of contexts) to gRPC codes, once for
// every gRPC server tenantcloud runs against the infra cluster (csi-controller,
// autoscaler-provider), so that one apiserver answer means the same code to every caller.
package grpcerr

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Code is the gRPC code for err, an error from an apiserver call (wrapped or not) or a context:
//   - DeadlineExceeded, Canceled: the caller's context ended;
//   - NotFound: 404;
//   - PermissionDenied: 403, and 401 (virt-api answers a refused SubjectAccessReview with it):
//     our credentials lack a right, an operator has to fix the Role;
//   - Aborted: 409 (a conflict or an object that already exists), the caller retries the
//     whole operation with fresh state;
//   - InvalidArgument: 400, 422;
//   - Unavailable: the apiserver could not serve the request now (Retryable);
//   - Internal: anything else.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case apierrors.IsNotFound(err):
		return codes.NotFound
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return codes.PermissionDenied
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		return codes.Aborted
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return codes.InvalidArgument
	case Retryable(err):
		return codes.Unavailable
	}
	return codes.Internal
}

// Retryable reports an apiserver answer worth retrying the same request for: overload (429),
// timeouts (504, and the 500 "timeout" reason), and 5xx server errors, including 500
// InternalError, which is how virt-api reports its own write conflicts.
func Retryable(err error) bool {
	return apierrors.IsInternalError(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsTooManyRequests(err) || apierrors.IsUnexpectedServerError(err)
}
