package stack

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TargetPod is a pod the example scanner may list and exec into.
const TargetPod = "scan-target"

// CreateTargetPod creates pod scan-target in scanner-namespace as admin
// (idempotent). It stays Pending (there are no nodes) but is listed.
func (s *Stack) CreateTargetPod(ctx context.Context) error {
	cs, err := s.Kube.AdminClient()
	if err != nil {
		return err
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: TargetPod, Namespace: ScannerNamespace},
		Spec: corev1.PodSpec{
			ServiceAccountName:           ScannerSA,
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}
	_, err = cs.CoreV1().Pods(ScannerNamespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create pod %s: %w", TargetPod, err)
	}
	return nil
}
