package crash

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// runTimeout bounds one phase of a run (the victim, the recovery, the checks).
const runTimeout = 45 * time.Second

// crashRun is one run of an operation, from its start state.
type crashRun struct {
	// victim starts a component whose every API request goes through sw, has it carry out the
	// operation, and returns once the operation completed or sw killed the component — in
	// both cases with the component stopped. Its error is the operation's result as the
	// component's caller saw it.
	victim func(ctx context.Context, sw *Switch) error
	// recover starts a fresh component (requests counted by sw) and lets the operation
	// finish the way the component's caller does after a crash (the CSI sidecars and
	// cluster-autoscaler retry, the service controller re-queues), then stops it.
	recover func(ctx context.Context, sw *Switch) error
	// check compares the world with the operation's desired end state: missing lists what
	// is not there (not converged), leaked what should not be (orphaned infra objects).
	check func(ctx context.Context) (missing, leaked []string)
	// cleanup brings the world back to neutral for the next run.
	cleanup func(ctx context.Context) error
}

// crashAtEveryStep runs op once without a crash to count its writes W, then W times more,
// killing the component after write N = 1..W, recovering, and checking convergence and
// leaks. prepare(t, n) sets up run n (0 is the uninterrupted run) from a neutral world.
func crashAtEveryStep(t *testing.T, component, op string, prepare func(t *testing.T, n int) crashRun) {
	t.Helper()
	r := &row{component: component, op: op}
	defer table.add(r)

	dry := prepare(t, 0)
	sw := NewSwitch(0, nil)
	start := time.Now()
	err := phase(func(ctx context.Context) error { return dry.victim(ctx, sw) })
	sw.Exit()
	if err != nil {
		t.Fatalf("%s %s without a crash: %v", component, op, err)
	}
	r.audited += checkAudit(t, sw, start)
	writes := sw.Writes()
	r.writes = len(writes)
	t.Logf("%s %s: %d writes without a crash:\n  %s", component, op, len(writes), strings.Join(writes, "\n  "))
	if len(writes) == 0 {
		t.Fatalf("%s %s made no API write: nothing to crash after", component, op)
	}
	// Retrying an operation that completed must change nothing and find nothing wrong.
	again := NewSwitch(0, nil)
	err = phase(func(ctx context.Context) error { return dry.recover(ctx, again) })
	again.Exit()
	if err != nil {
		t.Fatalf("%s %s retried after completion: %v", component, op, err)
	}
	if w := again.Writes(); len(w) > 0 {
		r.notes = append(r.notes, fmt.Sprintf("a retry after completion wrote %d time(s): %s", len(w), strings.Join(w, "; ")))
	}
	if missing, leaked := checkNow(dry.check); len(missing)+len(leaked) > 0 {
		t.Fatalf("%s %s without a crash: missing %v, leaked %v", component, op, missing, leaked)
	}
	if err := phase(dry.cleanup); err != nil {
		t.Fatalf("cleanup after the uninterrupted run: %v", err)
	}

	for n := 1; n <= len(writes); n++ {
		run := prepare(t, n)
		sw := NewSwitch(n, nil)
		start := time.Now()
		verr := phase(func(ctx context.Context) error { return run.victim(ctx, sw) })
		killed := sw.Dead()
		sw.Exit()
		if !killed {
			// The run took fewer writes than the uninterrupted one (a conflict retry, an
			// informer that was already up to date): still a valid run, not a crash point.
			r.notes = append(r.notes, fmt.Sprintf("run %d ended (err %v) after %d writes without reaching crash point %d", n, verr, len(sw.Writes()), n))
		} else {
			r.tried++
		}
		r.audited += checkAudit(t, sw, start)
		rec := NewSwitch(0, nil)
		rerr := phase(func(ctx context.Context) error { return run.recover(ctx, rec) })
		rec.Exit()
		missing, leaked := checkNow(run.check)
		if rerr != nil {
			missing = append(missing, "recovery failed: "+rerr.Error())
		}
		if len(missing) == 0 && killed {
			r.converged++
		}
		r.leaked += len(leaked)
		landed := sw.Writes()
		if len(missing)+len(leaked) > 0 {
			t.Errorf("%s %s killed after write %d/%d (%s): missing %v, leaked %v; recovery wrote %v",
				component, op, n, len(writes), last(landed), missing, leaked, rec.Writes())
		} else {
			t.Logf("killed after write %d/%d (%s): converged, recovery wrote %d", n, len(writes), last(landed), len(rec.Writes()))
		}
		if err := phase(run.cleanup); err != nil {
			t.Fatalf("cleanup after run %d: %v", n, err)
		}
	}
	if r.tried == 0 {
		// Every run finished before its crash point: no crash was tested at all.
		t.Errorf("%s %s: none of %d runs reached its crash point (%s)", component, op, len(writes), strings.Join(r.notes, "; "))
	}
}

// untilKilled makes call and returns its result, or ErrKilled once sw kills the component: the
// caller's request then breaks with the connection (its context is cancelled) and is not
// waited for beyond that.
func untilKilled(ctx context.Context, sw *Switch, call func(context.Context) error) error {
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(callCtx) }()
	select {
	case err := <-done:
		return err
	case <-sw.Killed():
		cancel()
		<-done
		return ErrKilled
	}
}

func last(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return s[len(s)-1]
}

// phase runs f with its own deadline.
func phase(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	return f(ctx)
}

// checkNow waits (bounded) for check to pass — the simulators finish what the component
// started asynchronously — and returns what is still wrong when it does not.
func checkNow(check func(ctx context.Context) (missing, leaked []string)) (missing, leaked []string) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	_ = eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		missing, leaked = check(ctx)
		if len(missing)+len(leaked) > 0 {
			return fmt.Errorf("missing %v, leaked %v", missing, leaked)
		}
		return nil
	})
	return missing, leaked
}

// checkAudit confirms from the apiservers' audit logs what the Switch reports: every write the
// component made since start reached an apiserver through the Switch, none after the kill —
// at least the answered writes and at most the ones let through. It returns the audited count.
func checkAudit(t *testing.T, sw *Switch, start time.Time) int {
	t.Helper()
	keep := func(e harness.AuditEvent) bool {
		if e.UserAgent != sw.UserAgent() || (e.ObjectRef != nil && e.ObjectRef.Resource == "events") {
			return false
		}
		switch e.Verb {
		case "create", "update", "patch", "delete", "deletecollection":
			return true
		}
		return false
	}
	n := 0
	for _, c := range []*harness.Cluster{env.Management, env.Tenant} {
		evs, err := c.AuditEvents(start, keep)
		if err != nil {
			t.Fatal(err)
		}
		n += len(evs)
	}
	if answered, sent := len(sw.Writes()), sw.Sent(); n < answered || n > sent {
		t.Errorf("the audit logs show %d writes by the component, the switch saw %d answered of %d sent", n, answered, sent)
	}
	return n
}
