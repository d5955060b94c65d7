package harness

import (
	"context"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestAPIServerRestart stops the tenant apiserver (gracefully, then by SIGKILL) and starts it
// again: same endpoint, etcd data kept, every credential made before still accepted, a watch
// opened before the outage resumes by itself, and the audit log continues.
func TestAPIServerRestart(t *testing.T) {
	ctx := ctxT(t)
	c := env.Tenant
	host := c.Config.Host
	const ns = "restart-probe"
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	user, err := c.AddUser("restart-probe", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.UserAgent = "restart-probe/" + t.Name()
	cs := kubernetes.NewForConfigOrDie(cfg)
	since := time.Now()
	createCM := func(name string) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating ConfigMap %s: %v", name, err)
		}
	}
	createCM("before")

	// A watch opened before the outage, as every component's informers are.
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	seen := factory.Core().V1().ConfigMaps().Informer()
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	if !cache.WaitForCacheSync(ctx.Done(), seen.HasSynced) {
		t.Fatal("informer did not sync")
	}

	for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		name := []string{"after-term", "after-kill"}[i]
		if err := c.stopAPIServer(ctx, sig); err != nil {
			t.Fatal(err)
		}
		if err := c.StopAPIServer(ctx); err == nil {
			t.Fatal("a second StopAPIServer found an apiserver to stop")
		}
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Client.Get(short, client.ObjectKey{Namespace: ns, Name: "before"}, &corev1.ConfigMap{})
		cancel()
		if err == nil {
			t.Fatalf("%v: the apiserver still answers after StopAPIServer", sig)
		}
		if err := c.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.StartAPIServer(ctx); err == nil {
			t.Fatal("StartAPIServer started a second apiserver")
		}
		if c.Config.Host != host {
			t.Fatalf("endpoint moved from %s to %s", host, c.Config.Host)
		}

		// Every credential from before the restart: the admin rest.Config, its kubeconfig file
		// and an AddUser identity.
		for _, kc := range []string{c.Kubeconfig, user.Kubeconfig} {
			kcfg, err := clientcmd.BuildConfigFromFlags("", kc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kubernetes.NewForConfigOrDie(kcfg).CoreV1().ConfigMaps(ns).Get(ctx, "before", metav1.GetOptions{}); err != nil {
				t.Fatalf("%v: kubeconfig %s after restart (etcd data or credentials lost): %v", sig, kc, err)
			}
		}
		createCM(name)
		err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			_, exists, err := seen.GetStore().GetByKey(ns + "/" + name)
			return exists, err
		})
		if err != nil {
			t.Fatalf("%v: the informer from before the restart never saw %s: %v", sig, name, err)
		}
	}

	events, err := c.AuditEvents(since, ByUserAgentPrefix(cfg.UserAgent))
	if err != nil {
		t.Fatal(err)
	}
	if n := CountByKey(events)["create configmaps"]; n != 3 {
		t.Fatalf("audit log has %d ConfigMap creates across the restarts, want 3 (%s)", n, FormatCounts(CountByKey(events)))
	}
}
