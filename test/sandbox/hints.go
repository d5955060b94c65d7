package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/tenantcloud/tenantcloud/test/harness/install"
)

// examples are manifests a user can apply to the running sandbox: what works here is what
// the stories did (the nodes reach no registry but the sandbox's, so pods use the images every
// node has).
var examples = map[string]string{
	"pvc-pod.yaml": `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: mydata}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 128Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: mypod}
spec:
  containers:
    - name: app
      image: localhost/tenantcloud-harness/volprobe:v1
      imagePullPolicy: Never
      args: [fs, /data, hello]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: mydata}}]
`,
	"lb-service.yaml": `apiVersion: v1
kind: Service
metadata: {name: mylb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 8080}]
`,
	"deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: big}
spec:
  replicas: 2
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      containers:
        - name: app
          image: localhost/tenantcloud-harness/pause:v1
          imagePullPolicy: Never
          resources: {requests: {cpu: %s}}
`,
}

// printHints prints the kubeconfigs, the kubectl commands to try and where the example
// manifests are.
func (s *sandbox) printHints() {
	kubectl := s.bin("kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		if kubectl, err = exec.LookPath("kubectl"); err != nil {
			kubectl = "kubectl # (none here: make bin builds bin/kubectl)"
		}
	}
	dir := filepath.Join(s.logDir, "examples")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fail("writing examples: %v", err)
	}
	for name, text := range examples {
		if name == "deployment.yaml" {
			text = fmt.Sprintf(text, webCPU())
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			fail("writing examples: %v", err)
		}
	}
	t, m := s.env.Tenant.Kubeconfig, s.env.Management.Kubeconfig
	fmt.Println()
	fmt.Println("Kubeconfigs (admin):")
	fmt.Printf("  tenant:     export KUBECONFIG=%s\n", t)
	fmt.Printf("  management: %s\n", m)
	fmt.Println("Try (tenant):")
	fmt.Printf("  %s get nodes -o wide; %s get pods -A -o wide\n", kubectl, kubectl)
	fmt.Printf("  %s apply -f %s   # a PVC and a pod writing to it: Running with its disk\n", kubectl, filepath.Join(dir, "pvc-pod.yaml"))
	fmt.Printf("  %s apply -f %s   # a LoadBalancer Service: EXTERNAL-IP from %s\n", kubectl, filepath.Join(dir, "lb-service.yaml"), poolCIDR)
	fmt.Printf("  %s apply -f %s   # 2 pods of %s CPUs: the cluster-autoscaler adds workers (real nodes up to %d, then simulated)\n",
		kubectl, filepath.Join(dir, "deployment.yaml"), webCPU(), realNodes)
	fmt.Printf("  %s get events -A --field-selector type=Warning\n", kubectl)
	fmt.Println("Try (management: the chart's pods, and what the tenant's objects became):")
	fmt.Printf("  %s --kubeconfig %s -n %s get pods -o wide; %s --kubeconfig %s -n %s status %s\n", kubectl, m, infraNS, s.bin("helm"), m, infraNS, install.DefaultRelease)
	fmt.Printf("  %s --kubeconfig %s -n %s get machinedeployments,machines,vm,vmi,dv,svc\n", kubectl, m, infraNS)
	fmt.Printf("Logs: %s (sandbox, values files), %s (apiservers; nodes/<node>/pod-logs: every pod's, the chart's on %s)\n",
		s.logDir, s.env.Dir, mgmtNode)
}
