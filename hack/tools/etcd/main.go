// Command etcd is etcd's own server entry point, built from go.etcd.io/etcd/server/v3
// so the local control plane does not depend on a distribution's (too old) etcd package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
