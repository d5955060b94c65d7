package autoscaler

// Annotation keys shared with Cluster API and cluster-autoscaler's clusterapi provider (facts
// from their sources; the externalgrpc provider must read the same ones so that an operator can
// move between the two without relabelling anything).
const (
	// AnnotationMinSize and AnnotationMaxSize bound a MachineDeployment's replicas.
	AnnotationMinSize = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
	AnnotationMaxSize = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"

	// AnnotationOptionsPrefix precedes per-group autoscaling options, e.g.
	// cluster.x-k8s.io/autoscaling-options-scaledownunneededtime: "5m".
	AnnotationOptionsPrefix = "cluster.x-k8s.io/autoscaling-options-"

	// Scale-from-zero capacity annotations on the MachineDeployment.
	AnnotationCapacityCPU           = "capacity.cluster-autoscaler.kubernetes.io/cpu"
	AnnotationCapacityMemory        = "capacity.cluster-autoscaler.kubernetes.io/memory"
	AnnotationCapacityEphemeralDisk = "capacity.cluster-autoscaler.kubernetes.io/ephemeral-disk"
	AnnotationCapacityMaxPods       = "capacity.cluster-autoscaler.kubernetes.io/maxPods"
	AnnotationCapacityGPUType       = "capacity.cluster-autoscaler.kubernetes.io/gpu-type"
	AnnotationCapacityGPUCount      = "capacity.cluster-autoscaler.kubernetes.io/gpu-count"
	AnnotationCapacityLabels        = "capacity.cluster-autoscaler.kubernetes.io/labels"
	AnnotationCapacityTaints        = "capacity.cluster-autoscaler.kubernetes.io/taints"

	// AnnotationDeleteMachine makes the MachineSet controller delete this Machine first when
	// replicas go down.
	AnnotationDeleteMachine = "cluster.x-k8s.io/delete-machine"
	// AnnotationPaused stops Cluster API reconciling an object; we then do not scale it either.
	AnnotationPaused = "cluster.x-k8s.io/paused"

	// AnnotationScaleDownRequested is ours: set in the same patch as AnnotationDeleteMachine
	// when this provider lowered replicas for the Machine. It is what makes a retried
	// DeleteNodes idempotent without trusting a delete-machine annotation someone else (an
	// operator choosing a victim for a later manual scale-down) may have set with no decrement.
	AnnotationScaleDownRequested = "autoscaler.tenantcloud.io/scale-down-requested"
)

// defaultMaxPods is the pods capacity of a template node when no annotation says otherwise:
// the kubelet's default, as in the clusterapi provider.
const defaultMaxPods = 110
