// Command pause is the sandbox ("pause") container of the harness's real nodes: containerd's
// CRI plugin starts one per pod to hold the pod's namespaces. It does what upstream's
// pause.c does — sleep until SIGINT/SIGTERM and reap the zombies of a shared PID namespace —
// so a node needs no image from a registry it cannot reach.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			// As PID 1 of a shared PID namespace, adopt and reap every orphan.
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
