// Command etcd builds the etcd server binary from go.etcd.io/etcd/server/v3.
//
// The etcd root module (go.etcd.io/etcd/v3), whose main.go is exactly this,
// is not published on the Go module proxy for every v3.6.x release, so the
// same two lines are kept here instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
