package harness

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	n := 0
	err := WaitFor(context.Background(), time.Minute, func(context.Context) (bool, error) {
		n++
		if n < 3 {
			return false, errors.New("apiserver restarting")
		}
		return true, nil
	})
	if err != nil || n != 3 {
		t.Fatalf("WaitFor = %v after %d checks; errors must be retried until the condition holds", err, n)
	}
	err = WaitFor(context.Background(), 3*PollInterval, func(context.Context) (bool, error) {
		return false, errors.New("connection refused")
	})
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("WaitFor on a condition that never holds = %v; want the timeout with the last error", err)
	}
}
