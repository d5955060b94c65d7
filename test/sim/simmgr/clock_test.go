package simmgr

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestStepClock(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewStepClock()
	c.now = func() time.Time { return now }
	key := types.NamespacedName{Namespace: "ns", Name: "vm"}
	if left := c.Remaining(key, "u1", "boot", time.Second); left != time.Second {
		t.Fatalf("new step: %v left, want 1s", left)
	}
	now = now.Add(400 * time.Millisecond)
	if left := c.Remaining(key, "u1", "boot", time.Second); left != 600*time.Millisecond {
		t.Fatalf("same step: %v left, want 600ms", left)
	}
	if left := c.Remaining(key, "u1", "run", time.Second); left != time.Second {
		t.Fatalf("next step restarts the clock: %v left", left)
	}
	if left := c.Remaining(key, "u2", "run", time.Second); left != time.Second {
		t.Fatalf("a recreated object (new UID) restarts the clock: %v left", left)
	}
	now = now.Add(2 * time.Second)
	if left := c.Remaining(key, "u2", "run", time.Second); left != 0 {
		t.Fatalf("elapsed step: %v left, want 0", left)
	}
	if uid, ok := c.UID(key); !ok || uid != "u2" {
		t.Fatalf("UID = %q, %v", uid, ok)
	}
	c.Forget(key)
	if _, ok := c.UID(key); ok {
		t.Fatal("Forget kept the entry")
	}
}
