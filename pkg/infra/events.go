package infra

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
)

// NewEventBroadcaster returns an events.k8s.io/v1 broadcaster writing to the management
// apiserver at cfg and a recorder reporting as component (Events on the tenant's infra
// objects). Start it with StartRecordingToSinkWithContext; it needs create and patch on
// events.k8s.io events in the tenant namespace.
func NewEventBroadcaster(cfg *rest.Config, component string) (events.EventBroadcaster, events.EventRecorder, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("building events client: %w", err)
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, nil, err
	}
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	return b, b.NewRecorder(scheme, component), nil
}
