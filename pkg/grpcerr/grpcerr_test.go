package grpcerr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestCode(t *testing.T) {
	gr := schema.GroupResource{Group: "cdi.kubevirt.io", Resource: "datavolumes"}
	status := func(code int32, reason metav1.StatusReason) error {
		return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason}}
	}
	tests := []struct {
		name      string
		err       error
		want      codes.Code
		retryable bool
	}{
		{"nil", nil, codes.OK, false},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, false},
		{"deadline, wrapped", fmt.Errorf("reading VMI: %w", context.DeadlineExceeded), codes.DeadlineExceeded, false},
		{"canceled", context.Canceled, codes.Canceled, false},
		{"404", apierrors.NewNotFound(gr, "tc-x"), codes.NotFound, false},
		{"404, wrapped", fmt.Errorf("getting: %w", apierrors.NewNotFound(gr, "tc-x")), codes.NotFound, false},
		{"403", apierrors.NewForbidden(gr, "tc-x", errors.New("no")), codes.PermissionDenied, false},
		{"401 (virt-api)", apierrors.NewUnauthorized("no"), codes.PermissionDenied, false},
		{"409 conflict", apierrors.NewConflict(gr, "tc-x", errors.New("stale")), codes.Aborted, false},
		{"409 exists", apierrors.NewAlreadyExists(gr, "tc-x"), codes.Aborted, false},
		{"422", apierrors.NewInvalid(schema.GroupKind{Kind: "DataVolume"}, "tc-x", field.ErrorList{field.Required(field.NewPath("spec"), "")}), codes.InvalidArgument, false},
		{"400", apierrors.NewBadRequest("bad"), codes.InvalidArgument, false},
		{"429", apierrors.NewTooManyRequests("slow down", 1), codes.Unavailable, true},
		{"500 InternalError", apierrors.NewInternalError(errors.New("conflict in virt-api")), codes.Unavailable, true},
		{"500 ServerTimeout", apierrors.NewServerTimeout(gr, "create", 1), codes.Unavailable, true},
		{"503", apierrors.NewServiceUnavailable("down"), codes.Unavailable, true},
		{"504", apierrors.NewTimeoutError("slow", 1), codes.Unavailable, true},
		{"502 unexpected", apierrors.NewGenericServerResponse(http.StatusBadGateway, "get", gr, "tc-x", "", 0, true), codes.Unavailable, true},
		{"500 reasonless", status(http.StatusInternalServerError, ""), codes.Unavailable, true},
		{"405", apierrors.NewMethodNotSupported(gr, "patch"), codes.Internal, false},
		{"plain error", errors.New("boom"), codes.Internal, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Code(tt.err); got != tt.want {
				t.Errorf("Code(%v) = %s, want %s", tt.err, got, tt.want)
			}
			if got := Retryable(tt.err); got != tt.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.retryable)
			}
		})
	}
}
