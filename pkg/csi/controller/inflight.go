package controller

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inFlight admits one operation per volume (or snapshot) ID at a time. The sidecars retry a
// call whose deadline passed while the first attempt still runs (waiting for CDI or for a
// hot-plug can outlast it); running both would race on the same infra objects. The loser gets
// ABORTED, which the CSI spec reserves for "operation pending for volume" and COs retry.
type inFlight struct {
	mu  sync.Mutex
	ops map[string]string // ID → the operation holding it
}

func newInFlight() *inFlight { return &inFlight{ops: map[string]string{}} }

// acquire claims id for op, returning the release func or an Aborted status naming the
// operation already running.
func (f *inFlight) acquire(id, op string) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if running, busy := f.ops[id]; busy {
		return nil, status.Errorf(codes.Aborted, "%s on %q is already in progress; retry %s later", running, id, op)
	}
	f.ops[id] = op
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.ops, id)
			f.mu.Unlock()
		})
	}, nil
}
