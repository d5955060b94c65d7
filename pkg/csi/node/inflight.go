package node

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inFlight admits one operation per volume ID at a time. Kubelet retries calls that time out
// while the first attempt is still running (formatting a large disk can take minutes); running
// both would race on the same device and mount points. The loser gets ABORTED, which the CO
// retries, as the CSI spec recommends for "operation pending for volume".
type inFlight struct {
	mu  sync.Mutex
	ops map[string]string // volume ID → the operation holding it
}

func newInFlight() *inFlight {
	return &inFlight{ops: map[string]string{}}
}

// acquire claims volumeID for op. On success it returns the release func; otherwise an
// Aborted status naming the operation already running.
func (f *inFlight) acquire(volumeID, op string) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if running, busy := f.ops[volumeID]; busy {
		return nil, status.Errorf(codes.Aborted, "%s on volume %q is already in progress; retry %s later", running, volumeID, op)
	}
	f.ops[volumeID] = op
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.ops, volumeID)
			f.mu.Unlock()
		})
	}, nil
}
