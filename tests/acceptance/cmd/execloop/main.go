// Command execloop is a long-running client-go program for the exec
// credential acceptance test: with a kubeconfig whose user is an exec
// credential plugin, it lists pods in the context's namespace every
// -interval for -duration and prints one line per attempt:
//
//	ok <elapsed> <pods>
//	error <elapsed> <message>
//
// It exits 1 if any attempt failed. client-go runs the plugin when it
// starts, again once the credential's expirationTimestamp has passed, and
// on a 401.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file")
	interval := flag.Duration("interval", 3*time.Second, "time between lists")
	duration := flag.Duration("duration", 3*time.Minute, "how long to run")
	flag.Parse()

	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: *kubeconfig}, &clientcmd.ConfigOverrides{})
	namespace, _, err := loader.Namespace()
	if err != nil {
		fmt.Fprintln(os.Stderr, "namespace:", err)
		os.Exit(2)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		os.Exit(2)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(2)
	}

	start := time.Now()
	failures := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		cancel()
		elapsed := time.Since(start).Round(100 * time.Millisecond)
		if err != nil {
			failures++
			fmt.Printf("error %s %v\n", elapsed, err)
		} else {
			fmt.Printf("ok %s %d\n", elapsed, len(pods.Items))
		}
		if time.Since(start)+*interval > *duration {
			break
		}
		time.Sleep(*interval)
	}
	if failures > 0 {
		os.Exit(1)
	}
}
