package backend

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// What the plugin writes on Kubernetes objects: references, the labels and
// annotations every object carries, and the objects of a lease (the bound
// Secret, the ephemeral ServiceAccount and RBAC) and of a rotation.

// objectRef names one object a lease owns. Namespace is empty for
// cluster-scoped kinds; UID is empty until the object exists.
type objectRef struct {
	Kind      string    `json:"kind"`
	Namespace string    `json:"namespace,omitempty"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid,omitempty"`
}

func (r objectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

func refOf(kind string, meta metav1.Object) objectRef {
	return objectRef{Kind: kind, Namespace: meta.GetNamespace(), Name: meta.GetName(), UID: meta.GetUID()}
}

const (
	managedByLabel    = "app.kubernetes.io/managed-by"
	managedByValue    = "vault-plugin-scanner"
	managedBySelector = managedByLabel + "=" + managedByValue

	annotationPrefix     = "vault-plugin-scanner/"
	roleAnnotation       = annotationPrefix + "role"
	clusterAnnotation    = annotationPrefix + "cluster"
	expiresAtAnnotation  = annotationPrefix + "expires-at"
	issueAnnotation      = annotationPrefix + "issue-id"
	boundSecretNameStart = "vault-scanner-"
)

// randomString returns n random characters of [a-z0-9].
func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read never returns an error.
	for i, c := range buf {
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf)
}

// randomSecretName returns a DNS-1123 name no other lease will pick
// (36^16 ≈ 8e24). It is chosen before the Secret exists so the WAL entry can
// name it.
func randomSecretName() string {
	return boundSecretNameStart + randomString(16)
}

// boundSecret is the per-lease object the token is bound to; deleting it
// invalidates the token. It holds no data.
func boundSecret(name string, lm leaseMeta) *corev1.Secret {
	return emptySecret(objectMeta(name, lm.role.ServiceAccountNamespace, lm))
}

// emptySecret is an object for a token to be bound to: no data, and
// immutable, so nothing can be stored in it later.
func emptySecret(meta metav1.ObjectMeta) *corev1.Secret {
	immutable := true
	return &corev1.Secret{ObjectMeta: meta, Type: corev1.SecretTypeOpaque, Immutable: &immutable}
}

// leaseMeta is what every object of one lease is labelled and annotated
// with.
type leaseMeta struct {
	roleName  string
	role      *roleEntry
	expiresAt time.Time
	// issueID is unique to one issue: rollback deletes an object it holds
	// no UID for only when the object carries it.
	issueID string
}

// objectMeta is the metadata every object of a lease carries.
func objectMeta(name, namespace string, lm leaseMeta) metav1.ObjectMeta {
	lbls := map[string]string{}
	for k, v := range lm.role.ExtraLabels {
		lbls[k] = v
	}
	lbls[managedByLabel] = managedByValue
	annotations := map[string]string{}
	for k, v := range lm.role.ExtraAnnotations {
		annotations[k] = v
	}
	annotations[roleAnnotation] = lm.roleName
	annotations[clusterAnnotation] = lm.role.Cluster
	annotations[expiresAtAnnotation] = lm.expiresAt.UTC().Format(time.RFC3339)
	annotations[issueAnnotation] = lm.issueID
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: lbls, Annotations: annotations}
}

// ephemeralObjects are what one ephemeral lease creates, in creation order:
// the ServiceAccount first (it owns the namespaced rest in its namespace),
// then a generated ClusterRole, then per namespace of the lease a generated
// Role (for a target-scoped lease, naming that namespace's target pods) and
// the binding (or one ClusterRoleBinding).
func ephemeralObjects(name string, ir *issueRequest, lm leaseMeta) ([]plannedObject, error) {
	role := ir.role
	meta := func(namespace string) metav1.ObjectMeta { return objectMeta(name, namespace, lm) }
	objs := []plannedObject{{kindServiceAccount, &corev1.ServiceAccount{ObjectMeta: meta(ir.namespace)}}}

	var rules []rbacv1.PolicyRule
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: role.KubernetesRoleType, Name: role.KubernetesRoleName}
	switch role.mode() {
	case modeTargets:
		var err error
		if rules, err = targetRuleTemplates(role); err != nil {
			return nil, userError{fmt.Errorf("role %q can no longer be issued; write it again: %w", ir.roleName, err)}
		}
		if len(ir.targets) == 0 {
			return nil, errors.New("a target-scoped lease without resolved targets")
		}
		roleRef.Name = name
	case modeGeneratedRole:
		var err error
		if rules, err = parseRules(role.GeneratedRoleRules, role.KubernetesRoleType); err != nil {
			return nil, userError{fmt.Errorf("role %q can no longer be issued; write it again: %w", ir.roleName, err)}
		}
		roleRef.Name = name
		if role.KubernetesRoleType == kindClusterRole {
			objs = append(objs, plannedObject{kindClusterRole, &rbacv1.ClusterRole{ObjectMeta: clusterRoleMeta(meta("")), Rules: rules}})
		}
	}
	// Every binding names the one ServiceAccount, in the first namespace.
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ir.namespace}}
	if ir.clusterRoleBinding {
		objs = append(objs, plannedObject{kindClusterRoleBinding, &rbacv1.ClusterRoleBinding{ObjectMeta: meta(""), RoleRef: roleRef, Subjects: subjects}})
		return objs, nil
	}
	for _, ns := range ir.leaseNamespaces() {
		switch {
		case role.mode() == modeTargets:
			// The Role names exactly this namespace's resolved pods.
			objs = append(objs, plannedObject{kindRole, &rbacv1.Role{ObjectMeta: meta(ns), Rules: targetRulesFor(rules, podsIn(ir.targets, ns))}})
		case role.generatesRole():
			objs = append(objs, plannedObject{kindRole, &rbacv1.Role{ObjectMeta: meta(ns), Rules: slices.Clone(rules)}})
		}
		objs = append(objs, plannedObject{kindRoleBinding, &rbacv1.RoleBinding{ObjectMeta: meta(ns), RoleRef: roleRef, Subjects: slices.Clone(subjects)}})
	}
	return objs, nil
}

// clusterRoleMeta drops the role's extra_labels from a generated
// ClusterRole: an aggregated ClusterRole anywhere in the cluster whose
// aggregationRule selects one of them would copy the lease's rules to its
// own subjects, who hold no lease. Only the plugin's own label stays (tidy
// needs it); aggregation selects by labels only, so annotations stay too.
func clusterRoleMeta(meta metav1.ObjectMeta) metav1.ObjectMeta {
	meta.Labels = map[string]string{managedByLabel: managedByValue}
	return meta
}

// ownedBy makes obj owned by the lease's first object, so Kubernetes' garbage
// collector removes it even if a revoke never ran. Owners must be namespaced
// alike: cluster-scoped objects get no owner and are deleted by revoke.
func ownedBy(obj metav1.Object, owner objectRef) {
	if obj.GetNamespace() == "" || obj.GetNamespace() != owner.Namespace {
		return
	}
	obj.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: owner.Kind, Name: owner.Name, UID: owner.UID}})
}

// plannedObject is one object a lease is about to create.
type plannedObject struct {
	kind string
	obj  metav1.Object
}

func (p plannedObject) ref() objectRef {
	return objectRef{Kind: p.kind, Namespace: p.obj.GetNamespace(), Name: p.obj.GetName()}
}

// rotationSecret is the object a rotated credential is bound to. It is
// labelled like the per-lease Secrets, so tidy removes it after expiresAt.
func rotationSecret(cluster, namespace string, expiresAt time.Time, issueID string) *corev1.Secret {
	return emptySecret(metav1.ObjectMeta{
		Name:      rotationSecretPrefix + randomString(16),
		Namespace: namespace,
		Labels:    map[string]string{managedByLabel: managedByValue},
		Annotations: map[string]string{
			purposeAnnotation:   purposeRotation,
			clusterAnnotation:   cluster,
			expiresAtAnnotation: expiresAt.UTC().Format(time.RFC3339),
			issueAnnotation:     issueID,
		},
	})
}

// Labels and annotations prove nothing: anyone who may edit an object in a
// managed namespace may write them. What the plugin deletes without a UID
// it recorded (tidy, and the rollback of a create whose outcome is unknown)
// must therefore carry a mark only this mount can make: an HMAC, under a
// secret key of the mount, over the object's identity and the annotations
// deletion relies on. Another mount, even one with the same cluster names,
// has another key.
const (
	ownershipKeyStorageKey = "ownership-key"
	ownershipKeyBytes      = 32
	ownerMarkAnnotation    = annotationPrefix + "owner-mark"
	// ownerMarkVersion starts the marked text, so a later change of what is
	// marked cannot be confused with this one.
	ownerMarkVersion = "v1"
)

// ownershipKey is a mount's secret for marking the objects it creates.
type ownershipKey []byte

// storedOwnershipKey is the storage entry of the key.
type storedOwnershipKey struct {
	Key []byte `json:"key"`
}

// ownershipKey returns the mount's key, creating and storing it on first
// use. It is cached on the backend (one plugin process serves many mounts,
// each with its own key) and dropped when storage says it changed.
func (b *backend) ownershipKey(ctx context.Context, s logical.Storage) (ownershipKey, error) {
	b.ownershipLock.Lock()
	defer b.ownershipLock.Unlock()
	if b.ownership != nil {
		return b.ownership, nil
	}
	entry, err := s.Get(ctx, ownershipKeyStorageKey)
	if err != nil {
		return nil, fmt.Errorf("reading the mount's ownership key: %w", err)
	}
	if entry != nil {
		var stored storedOwnershipKey
		if err := entry.DecodeJSON(&stored); err != nil {
			return nil, fmt.Errorf("decoding the mount's ownership key: %w", err)
		}
		if len(stored.Key) != ownershipKeyBytes {
			// Never replace it: every object marked so far would become
			// unverifiable, and a truncated key is not to be trusted.
			return nil, fmt.Errorf("the mount's ownership key has %d bytes, want %d", len(stored.Key), ownershipKeyBytes)
		}
		b.ownership = stored.Key
		return b.ownership, nil
	}
	key := make([]byte, ownershipKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating the mount's ownership key: %w", err)
	}
	entry, err = logical.StorageEntryJSON(ownershipKeyStorageKey, storedOwnershipKey{Key: key})
	if err != nil {
		return nil, fmt.Errorf("encoding the mount's ownership key: %w", err)
	}
	// Wrapped with %w: on a performance standby the write fails with
	// logical.ErrReadOnly, which makes Vault forward the request to the
	// active node.
	if err := s.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing the mount's ownership key: %w", err)
	}
	b.ownership = key
	return b.ownership, nil
}

// dropOwnershipKey forgets the cached key, so the next use reads storage.
func (b *backend) dropOwnershipKey() {
	b.ownershipLock.Lock()
	defer b.ownershipLock.Unlock()
	b.ownership = nil
}

// markOwned sets obj's owner mark from its own annotations. It must run
// after every annotation the mark covers is final and right before the
// object is created: a later change of them breaks the mark, and then tidy
// and rollback leave the object alone.
func (b *backend) markOwned(ctx context.Context, s logical.Storage, kind string, obj metav1.Object) error {
	key, err := b.ownershipKey(ctx, s)
	if err != nil {
		return err
	}
	// A copy: objects of one lease may have been built from one map.
	annotations := maps.Clone(obj.GetAnnotations())
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[ownerMarkAnnotation] = key.mark(kind, obj)
	obj.SetAnnotations(annotations)
	return nil
}

// mark is base64url(HMAC-SHA256(key, canonical)).
func (k ownershipKey) mark(kind string, obj metav1.Object) string {
	return base64.RawURLEncoding.EncodeToString(k.sum(kind, obj))
}

// sum is the HMAC of the canonical text: the version tag, kind, namespace,
// name and the issue-id, cluster and expires-at annotations, joined with
// newlines. None of them can hold a newline as the plugin writes them
// (Kubernetes names, an issue id of [a-z0-9], a cluster name, an RFC 3339
// time), so no two objects share a canonical text.
func (k ownershipKey) sum(kind string, obj metav1.Object) []byte {
	a := obj.GetAnnotations()
	fields := [...]string{
		ownerMarkVersion, kind, obj.GetNamespace(), obj.GetName(),
		a[issueAnnotation], a[clusterAnnotation], a[expiresAtAnnotation],
	}
	canonical := make([]byte, 0, 256)
	for i, field := range fields {
		if i > 0 {
			canonical = append(canonical, '\n')
		}
		canonical = append(canonical, field...)
	}
	mac := hmac.New(sha256.New, k)
	mac.Write(canonical)
	return mac.Sum(nil)
}

// owns reports whether obj, as read back from the API server, carries a
// mark this key made over its current kind, name and annotations.
func (k ownershipKey) owns(kind string, obj metav1.Object) bool {
	if len(k) == 0 {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(obj.GetAnnotations()[ownerMarkAnnotation])
	if err != nil || len(got) != sha256.Size {
		return false
	}
	return hmac.Equal(got, k.sum(kind, obj))
}

// deleteIfFromIssue deletes an object known only by name (a create whose
// outcome is unknown), and only if it is provably this issue's: it carries
// issueID and the mount's mark. An object of that name may be someone
// else's, who may have copied the issue id onto it.
func (b *backend) deleteIfFromIssue(ctx context.Context, s logical.Storage, api kubeAPI, ref objectRef, issueID string) error {
	if ref.UID != "" {
		return api.DeleteObject(ctx, ref)
	}
	key, err := b.ownershipKey(ctx, s)
	if err != nil {
		return err
	}
	err = deleteIfMarked(ctx, api, key, ref, issueID)
	if errors.Is(err, errNotOwned) {
		// Retrying cannot change the answer; say so once and let the
		// caller count it as done.
		b.Logger().Warn("not deleting an object of an unfinished issue", "object", ref.String(), "reason", err.Error())
		return nil
	}
	return err
}

func deleteIfMarked(ctx context.Context, api kubeAPI, key ownershipKey, ref objectRef, issueID string) error {
	if ref.UID != "" {
		return api.DeleteObject(ctx, ref)
	}
	meta, err := api.GetObjectMeta(ctx, ref)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("looking up %s, whose create may have succeeded: %w", ref, err)
	case issueID == "" || meta.GetLabels()[managedByLabel] != managedByValue || meta.GetAnnotations()[issueAnnotation] != issueID:
		return nil // not created by this issue: never touch it
	case !key.owns(ref.Kind, meta):
		return errNotOwned
	}
	return api.DeleteObject(ctx, refOf(ref.Kind, meta))
}

// errNotOwned says an object carries this issue's id but not the mount's
// mark: someone else made or edited it, so the plugin leaves it alone.
var errNotOwned = errors.New("it carries this issue's id but not the mount's ownership mark, so it was made or edited by someone else; left alone")
