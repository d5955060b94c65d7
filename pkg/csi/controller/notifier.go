package controller

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// notifier turns informer events into wake-ups for calls waiting on one object: CreateVolume
// waits for its DataVolume to succeed, ControllerPublishVolume for the VMI's volume status to
// reach Ready, and so on. A waiter re-checks its condition against the cache each time its
// object changes, so the wait costs no API requests and ends one event after the condition
// holds, with no polling interval. Informers update their store before they call handlers, so
// the re-check always sees the state the event announced.
type notifier struct {
	mu   sync.Mutex
	subs map[objKey]map[chan struct{}]struct{}
	// stopped ends every wait when the server stops (its informers stop with it, so nothing
	// would wake the waiters); nil until Start sets it.
	stopped <-chan struct{}
}

// errStopped ends waits when the server shuts down; the CO retries the call elsewhere.
var errStopped = status.Error(codes.Unavailable, "csi-controller is shutting down; retry")

// objKey names an object the notifier tracks: a kind of ours and the object's name (all
// objects live in the tenant namespace).
type objKey struct{ kind, name string }

// Kinds the controller waits on.
const (
	kindDataVolume = "DataVolume"
	kindClaim      = "PersistentVolumeClaim"
	kindVM         = "VirtualMachine"
	kindVMI        = "VirtualMachineInstance"
	kindSnapshot   = "VolumeSnapshot"
)

func newNotifier() *notifier { return &notifier{subs: map[objKey]map[chan struct{}]struct{}{}} }

// notify wakes every waiter of the object; a waiter that has not consumed the previous wake-up
// keeps just one (it re-checks the latest state anyway).
func (n *notifier) notify(kind, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs[objKey{kind, name}] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (n *notifier) subscribe(k objKey) chan struct{} {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs[k] == nil {
		n.subs[k] = map[chan struct{}]struct{}{}
	}
	n.subs[k][ch] = struct{}{}
	return ch
}

func (n *notifier) unsubscribe(k objKey, ch chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.subs[k], ch)
	if len(n.subs[k]) == 0 {
		delete(n.subs, k)
	}
}

// wait calls check now and after every event on the object until it reports done or fails,
// or ctx ends (ctx.Err() is returned). Subscribing before the first check means no event
// between the check and the wait can be missed.
func (n *notifier) wait(ctx context.Context, kind, name string, check func() (bool, error)) error {
	k := objKey{kind, name}
	ch := n.subscribe(k)
	defer n.unsubscribe(k, ch)
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopped:
			return errStopped
		}
	}
}

// handler is the informer event handler feeding the notifier for objects of kind.
func (n *notifier) handler(kind string) toolscache.ResourceEventHandler {
	name := func(obj any) string {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if o, ok := obj.(client.Object); ok {
			return o.GetName()
		}
		return ""
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.notify(kind, name(obj)) },
		UpdateFunc: func(_, obj any) { n.notify(kind, name(obj)) },
		DeleteFunc: func(obj any) { n.notify(kind, name(obj)) },
	}
}
