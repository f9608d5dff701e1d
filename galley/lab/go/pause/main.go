// The lab's pause program: the sandbox process of every pod, what registry.k8s.io/pause runs.
// It holds the pod's namespaces, reaps the children orphaned in them, and exits on SIGINT or
// SIGTERM. The lab builds it (galley.lab.gobuild) into its pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for received := range signals {
		if received != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
