package backend

import (
	"fmt"
	"strings"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

const (
	// maxExtraEntries caps extra_labels and extra_annotations each; objects
	// with more are a mistake, and each entry costs every issue.
	maxExtraEntries = 64
	// maxExtraAnnotationsBytes caps the extra annotations' keys and values
	// together, far below Kubernetes' 256 KiB, so the plugin's own
	// annotations (role and cluster names of at most 128 bytes, an RFC 3339
	// time, a 32-character id) always fit: an issue never fails on size.
	maxExtraAnnotationsBytes = 64 << 10
)

// reservedKey says why a label or annotation key may not be set by a role,
// or "" if it may. Kubernetes owns the kubernetes.io and k8s.io prefixes and
// their subdomains (rbac.authorization.k8s.io/aggregate-to-admin, say, would
// grant through aggregation); the plugin owns its own keys, which tidy and
// revoke rely on. Compared case-insensitively: annotation keys are
// validated that way.
func reservedKey(key string) string {
	lower := strings.ToLower(key)
	prefix, _, hasPrefix := strings.Cut(lower, "/")
	switch {
	case lower == managedByLabel, hasPrefix && prefix+"/" == annotationPrefix:
		return "reserved for the plugin"
	case !hasPrefix:
		return ""
	case prefix == "kubernetes.io", prefix == "k8s.io", strings.HasSuffix(prefix, ".kubernetes.io"), strings.HasSuffix(prefix, ".k8s.io"):
		return "reserved for Kubernetes (kubernetes.io, k8s.io and their subdomains)"
	}
	return ""
}

// validateExtraLabels applies Kubernetes' own label rules at write time, so
// a role never fails at issue time on what it stores.
func validateExtraLabels(labels map[string]string) error {
	const fieldName = "extra_labels"
	if len(labels) > maxExtraEntries {
		return fmt.Errorf("%s has %d entries; at most %d are allowed", fieldName, len(labels), maxExtraEntries)
	}
	path := field.NewPath(fieldName)
	for _, k := range sortedKeys(labels) {
		if errs := metavalidation.ValidateLabelName(k, path); len(errs) > 0 {
			return fmt.Errorf("%s key %q is invalid: %s", fieldName, clip(k), details(errs))
		}
		if why := reservedKey(k); why != "" {
			return fmt.Errorf("%s key %q is %s", fieldName, clip(k), why)
		}
		// The key passed: what remains is about the value.
		if errs := metavalidation.ValidateLabels(map[string]string{k: labels[k]}, path); len(errs) > 0 {
			return fmt.Errorf("%s value for %q is invalid: %s", fieldName, clip(k), details(errs))
		}
	}
	return nil
}

func validateExtraAnnotations(annotations map[string]string) error {
	const fieldName = "extra_annotations"
	if len(annotations) > maxExtraEntries {
		return fmt.Errorf("%s has %d entries; at most %d are allowed", fieldName, len(annotations), maxExtraEntries)
	}
	total := 0
	for k, v := range annotations {
		total += len(k) + len(v)
	}
	if total > maxExtraAnnotationsBytes {
		return fmt.Errorf("%s hold %d bytes of keys and values; at most %d are allowed", fieldName, total, maxExtraAnnotationsBytes)
	}
	path := field.NewPath(fieldName)
	for _, k := range sortedKeys(annotations) {
		if errs := apivalidation.ValidateAnnotations(map[string]string{k: annotations[k]}, path); len(errs) > 0 {
			return fmt.Errorf("%s key %q is invalid: %s", fieldName, clip(k), details(errs))
		}
		if why := reservedKey(k); why != "" {
			return fmt.Errorf("%s key %q is %s", fieldName, clip(k), why)
		}
	}
	return nil
}

// details joins apimachinery's explanations without the rejected values,
// which its Error() would quote in full.
func details(errs field.ErrorList) string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		if e.Detail != "" {
			out = append(out, e.Detail)
		} else {
			out = append(out, e.Type.String())
		}
	}
	return strings.Join(out, "; ")
}
