// Command etcd is the etcd server at the exact version that the pinned
// k8s.io/kubernetes requires, so the control plane does not depend on the
// distribution's (older) etcd package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
