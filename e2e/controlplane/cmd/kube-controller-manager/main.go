// Command kube-controller-manager is the upstream Kubernetes controller
// manager, built from the pinned k8s.io/kubernetes module for paystream's
// local control plane.
package main

import (
	"os"
	_ "time/tzdata" // time zones for CronJob and friends, independent of the host

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // kubernetes_build_info metric
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
