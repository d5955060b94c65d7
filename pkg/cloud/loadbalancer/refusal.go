package loadbalancer

import (
	"errors"
	"fmt"
)

// Refusal is a tenant request tenantcloud will not carry out (a pool or address not granted,
// the quota reached, ...). It is reported to the tenant as a Warning Event on the Service and
// no infra object is changed.
type Refusal struct {
	// Reason is the Event reason, CamelCase.
	Reason string
	// Message says what was refused and why, for the tenant.
	Message string
}

func (r *Refusal) Error() string { return fmt.Sprintf("refused (%s): %s", r.Reason, r.Message) }

// Event reasons of refusals.
const (
	ReasonPoolNotAllowed      = "LoadBalancerPoolNotAllowed"
	ReasonIPNotAllowed        = "LoadBalancerIPNotAllowed"
	ReasonInvalidRequest      = "LoadBalancerInvalid"
	ReasonQuotaExceeded       = "LoadBalancerQuotaExceeded"
	ReasonNameTaken           = "LoadBalancerNameTaken"
	ReasonEndpointSkipped     = "LoadBalancerEndpointSkipped"
	ReasonExternalIPsIgnored  = "LoadBalancerExternalIPsIgnored"
	ReasonInfraServiceRefused = "LoadBalancerInfraRefused"
	// ReasonIPFamilyUnavailable: the tenant asked for an IP family (RequireDualStack: both)
	// the infra cluster does not serve; nothing was created or changed.
	ReasonIPFamilyUnavailable = "LoadBalancerIPFamilyUnavailable"
)

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// AsRefusal returns the Refusal in err's chain, if any.
func AsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}
