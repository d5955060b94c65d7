package harness

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// Eventually fails tb unless cond holds within timeout (see WaitFor).
func Eventually(tb testing.TB, ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) {
	tb.Helper()
	if err := WaitFor(ctx, timeout, cond); err != nil {
		tb.Fatalf("waiting for %s: %v", what, err)
	}
}

// Consistently checks cond every PollInterval for d and fails tb at its first error: how a
// test shows that something does not happen (a stalled phase holds) without sleeping.
func Consistently(tb testing.TB, ctx context.Context, d time.Duration, what string, cond func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var failed error
	_ = wait.PollUntilContextCancel(ctx, PollInterval, true, func(ctx context.Context) (bool, error) {
		if err := cond(ctx); err != nil {
			failed = err
			return true, nil
		}
		return false, nil
	})
	if failed != nil {
		tb.Fatalf("%s: %v", what, failed)
	}
}

// TestContext is a context for one test that ends after d or with the test.
func TestContext(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// UserNamespace creates a namespace named prefix-<random> in c, as a user would, and waits
// until its default ServiceAccount exists (made by the real serviceaccount controller, which
// the caller runs), so pods can be created in it at once.
func (c *Cluster) UserNamespace(tb testing.TB, ctx context.Context, prefix string) string {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := c.Client.Create(ctx, ns); err != nil {
		tb.Fatalf("%s: creating a namespace %s-: %v", c.Name, prefix, err)
	}
	Eventually(tb, ctx, time.Minute, "default ServiceAccount in "+ns.Name, func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	return ns.Name
}
