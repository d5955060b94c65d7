package harness

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// PollInterval is how often WaitFor checks: short, since conditions are API reads against
// local apiservers and tests measure how soon things happen.
const PollInterval = 20 * time.Millisecond

// WaitFor checks cond every PollInterval until it holds, ctx ends or timeout passes. An error
// from cond does not stop the wait — the clusters are eventually consistent and an apiserver
// may be restarting — but the last one is part of the error returned on timeout.
func WaitFor(ctx context.Context, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, PollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			last = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last error: %v)", err, last)
	}
	return err
}
