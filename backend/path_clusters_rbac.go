package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const (
	clusterRBACHelpSynopsis    = "The RBAC manifests the plugin's own identity needs for the roles of a cluster, and nothing more."
	clusterRBACHelpDescription = `
Returns, in manifests, the Roles, ClusterRoles and their bindings that give
the plugin's identity (subject: the service account its stored
service_account_jwt names, or the pod's own in-cluster) exactly the rights
clusters/<name>/check checks for the roles on this cluster (roles), ready for
"kubectl apply -f -". One Role per namespace and one ClusterRole for rights
needed cluster-wide (roles allowing "*", selectors whose namespaces cannot be
listed, namespace lookups); rules of the same resource are merged, and a
right that names an object keeps its resourceNames (the service account of an
existing-account role, the Role or ClusterRole bound with kubernetes_role_name).
A comment above each rule names the roles that need it. For
generated_role_rules the plugin is given the rules it generates (Kubernetes
lets it create a Role whose rules it holds), never escalate. When the stored
JWT names a service account, a separate Role in its namespace grants
self-rotation (rotate-root, rotation_period). In issuer mode (use_issuer) the
subject is the User the API server maps the plugin's tokens to (see
clusters/<name>/authentication-config) and there is no self-rotation. The objects are named after the
subject: <service account>-token-requester and <service account>-self-rotation.

A selector role covers the namespaces its selector matches now (a namespace
labelled later needs the manifests again), or, when the namespaces cannot be
listed or are more than 128, every namespace. A role the plugin refuses to
issue for (its own identity, an unrestricted token right in its namespace, a
bound role granting the plugin's own rights) gets no rules. Nothing is
created; notes says what was covered differently or left out. At most 2048
rights are written (each right of a role and each rule a generated role
expands to counts one); a role that does not fit is left out whole, named in
notes, and complete is false.
`
)

// maxRBACPermissions bounds the rights one rbac read writes, like
// maxCheckReviews bounds what check asks: roles and their rules are written
// by roles/ writers.
const maxRBACPermissions = maxCheckReviews

func pathClusterRBAC(b *backend) *framework.Path {
	return clusterActionPath("rbac", "cluster-rbac", map[logical.Operation]framework.OperationHandler{
		logical.ReadOperation: &framework.PathOperation{
			Callback:     b.entry(clusterName, false, b.clusterRBAC),
			Summary:      "Return the RBAC manifests the plugin needs for the roles of a cluster.",
			DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
		},
	}, clusterRBACHelpSynopsis, clusterRBACHelpDescription)
}

// selfRotation stands for self-rotation among the roles that need a right;
// no role name can be written like it.
const selfRotation = "(self-rotation)"

// rbacRight is one single right: a verb on a resource (with subresource),
// optionally one object by name, or a verb on a non-resource URL.
type rbacRight struct {
	group, resource, name, verb string
	url                         string // non-resource URL; resource is "" then
}

// rbacGrant collects, per namespace ("" for cluster-wide), the rights the
// roles need and which roles need each.
type rbacGrant map[string]map[rbacRight]map[string]bool

func (g rbacGrant) add(ns string, right rbacRight, who string) {
	if g[ns] == nil {
		g[ns] = map[rbacRight]map[string]bool{}
	}
	if g[ns][right] == nil {
		g[ns][right] = map[string]bool{}
	}
	g[ns][right][who] = true
}

func (g rbacGrant) addAttrs(attrs authorizationv1.ResourceAttributes, who string) {
	resource := attrs.Resource
	if attrs.Subresource != "" {
		resource += "/" + attrs.Subresource
	}
	g.add(attrs.Namespace, rbacRight{group: attrs.Group, resource: resource, name: attrs.Name, verb: attrs.Verb}, who)
}

// moveCovered removes from g, in each namespace but the cluster-wide
// scope, the rights that one of the scopes of by grants anyway (a role
// allowing "*" beside one naming the namespace; self-rotation beside a
// role in the plugin's namespace), naming their roles on the right that
// covers them. by may be g itself.
func (g rbacGrant) moveCovered(by rbacGrant, sameNamespace bool) {
	for ns, rights := range g {
		if ns == "" {
			continue
		}
		scopes := []map[rbacRight]map[string]bool{by[""]}
		if sameNamespace {
			scopes = append(scopes, by[ns])
		}
		for right, who := range rights {
			unnamed := right
			unnamed.name = ""
			if covering := coveringRight(scopes, right, unnamed); covering != nil {
				for r := range who {
					covering[r] = true
				}
				delete(rights, right)
			}
		}
		if len(rights) == 0 {
			delete(g, ns)
		}
	}
}

func coveringRight(scopes []map[rbacRight]map[string]bool, rights ...rbacRight) map[string]bool {
	for _, scope := range scopes {
		for _, r := range rights {
			if who := scope[r]; who != nil {
				return who
			}
		}
	}
	return nil
}

// rbacSubject is whom the manifests bind.
type rbacSubject struct {
	subject rbacv1.Subject
	prefix  string // names the objects
}

func (b *backend) clusterRBAC(ctx context.Context, req *logical.Request, _ *framework.FieldData, name string) (*logical.Response, error) {
	client, err := b.client(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	cfg, err := getCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, userError{fmt.Errorf("cluster %q is not configured", name)}
	}
	subject, err := b.rbacSubject(ctx, req.Storage, cfg, client)
	if err != nil {
		return nil, err
	}
	roles, err := rolesUsingCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}

	grant := rbacGrant{}
	notes := []string{}
	covered := []string{}
	complete := true
	budget := maxRBACPermissions
	selectors := newSelectorMatches(client.api)
	for _, roleName := range sortedKeys(roles) {
		role := roles[roleName]
		if err := b.checkGrantable(ctx, req.Storage, client, roleName, role, listedNamespaces(role)); err != nil {
			var user userError
			if !errors.As(err, &user) {
				return nil, err
			}
			notes = append(notes, fmt.Sprintf("role %s gets no rules: the plugin refuses to issue for it: %v", roleName, err))
			continue
		}
		selected, why := selectors.of(ctx, role)
		if why != "" {
			notes = append(notes, fmt.Sprintf("role %s: %s; its rights are granted cluster-wide", roleName, why))
		}
		perms := permissionsFor(role, selected)
		perms = append(perms, cleanupPermissionsFor(role, perms)...)
		cost := 0
		for _, perm := range perms {
			switch {
			case len(perm.orAll) > 0:
				cost += len(perm.orAll)
			case perm.attrs.Verb == "escalate":
				// Held as written (holdRawRules): at most this many.
				cost += maxRulePermissions
			default:
				cost++
			}
		}
		if cost > budget {
			complete = false
			notes = append(notes, fmt.Sprintf("role %s is left out: the manifests hold at most %d rights and its %d do not fit", roleName, maxRBACPermissions, cost))
			continue
		}
		budget -= cost
		for _, perm := range perms {
			switch {
			case len(perm.orAll) > 0:
				// Hold the rules the plugin generates rather than escalate.
				for _, attrs := range perm.orAll {
					grant.addAttrs(attrs, roleName)
				}
			case perm.attrs.Verb == "escalate":
				// The rules cannot be expanded (nonResourceURLs): hold them as written.
				if err := holdRawRules(grant, role, perm.attrs.Namespace, roleName); err != nil {
					complete = false
					notes = append(notes, fmt.Sprintf("role %s: %v; its generated rules are not granted", roleName, err))
				}
			default:
				grant.addAttrs(perm.attrs, roleName)
			}
		}
		covered = append(covered, roleName)
	}
	grant.moveCovered(grant, false)
	notes = append(notes, unrestrictedTokenConflicts(grant, roles, covered)...)

	var docs []interface{}
	var selfDocs []interface{}
	if perms, why := selfRotationPermissions(cfg); why != "" {
		notes = append(notes, why)
	} else {
		self := rbacGrant{}
		for _, perm := range perms {
			self.addAttrs(perm.attrs, selfRotation)
		}
		self.moveCovered(grant, true)
		for ns, rights := range self {
			selfDocs = append(selfDocs, roleDocuments(subject, subject.prefix+"-self-rotation", ns, rights)...)
		}
	}
	docs = append(docs, selfDocs...)
	for _, ns := range sortedKeys(grant) {
		if ns == "" {
			continue
		}
		docs = append(docs, roleDocuments(subject, subject.prefix+"-token-requester", ns, grant[ns])...)
	}
	if rights := grant[""]; len(rights) > 0 {
		docs = append(docs, roleDocuments(subject, subject.prefix+"-token-requester", "", rights)...)
	}
	manifests, err := renderManifests(name, docs, covered)
	if err != nil {
		return nil, err
	}
	subjectData := map[string]interface{}{"kind": subject.subject.Kind, "name": subject.subject.Name}
	if subject.subject.Namespace != "" {
		subjectData["namespace"] = subject.subject.Namespace
	}
	return &logical.Response{Data: map[string]interface{}{
		"manifests": manifests,
		"subject":   subjectData,
		"roles":     covered,
		"notes":     notes,
		"complete":  complete,
	}}, nil
}

// rbacSubject is the plugin's identity on the cluster: in issuer mode the
// user clusters/<name>/authentication-config maps its tokens to (the API
// server need not trust the issuer yet); otherwise the service account its
// credential's claims name, or whom the API server says it is.
func (b *backend) rbacSubject(ctx context.Context, s logical.Storage, cfg *clusterConfig, client *clusterClient) (rbacSubject, error) {
	if cfg.UseIssuer {
		issuer, err := getIssuerConfig(ctx, s)
		if err != nil {
			return rbacSubject{}, err
		}
		if issuer == nil {
			return rbacSubject{}, errIssuerNotConfigured
		}
		user := issuerUsername(issuer.Issuer, cfg.IssuerSubject)
		return rbacSubject{subject: rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}, prefix: "vault-plugin-scanner"}, nil
	}
	user, ok := credentialUser(cfg, b.inCluster)
	if !ok {
		var err error
		user, err = client.api.WhoAmI(ctx)
		if err != nil {
			return rbacSubject{}, fmt.Errorf("asking the API server whom the plugin's credential authenticates as: %w", err)
		}
	}
	if rest, ok := strings.CutPrefix(user, "system:serviceaccount:"); ok {
		if ns, sa, ok := strings.Cut(rest, ":"); ok && ns != "" && sa != "" {
			return rbacSubject{subject: rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}, prefix: sa}, nil
		}
	}
	return rbacSubject{subject: rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}, prefix: "vault-plugin-scanner"}, nil
}

// holdRawRules grants a generated role's rules as written, for rules that
// do not expand to single rights (nonResourceURLs, which only a ClusterRole
// generates: ns is "").
func holdRawRules(grant rbacGrant, role *roleEntry, ns, who string) error {
	rules, err := parseRules(role.GeneratedRoleRules, role.KubernetesRoleType)
	if err != nil {
		return fmt.Errorf("its generated_role_rules no longer parse")
	}
	if rulePermissionCount(rules) > maxRulePermissions {
		return fmt.Errorf("its generated_role_rules expand to more than %d rights", maxRulePermissions)
	}
	for _, rule := range rules {
		names := rule.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, verb := range rule.Verbs {
			for _, url := range rule.NonResourceURLs {
				grant.add("", rbacRight{verb: verb, url: url}, who)
			}
			for _, group := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, name := range names {
						grant.add(ns, rbacRight{group: group, resource: res, name: name, verb: verb}, who)
					}
				}
			}
		}
	}
	return nil
}

// unrestrictedTokenConflicts notes existing-account roles in namespaces
// where the manifests let the plugin mint tokens for any service account
// (an ephemeral role needs that): the plugin refuses to issue for them there.
func unrestrictedTokenConflicts(grant rbacGrant, roles map[string]*roleEntry, covered []string) []string {
	var notes []string
	for _, roleName := range covered {
		role := roles[roleName]
		if role.ephemeral() {
			continue
		}
		ns := role.ServiceAccountNamespace
		for _, scope := range []string{ns, ""} {
			attrs := anyTokenAttributes(ns)
			resource := attrs.Resource + "/" + attrs.Subresource
			if who := grant[scope][rbacRight{group: attrs.Group, resource: resource, verb: attrs.Verb}]; len(who) > 0 {
				notes = append(notes, fmt.Sprintf("role %s: role(s) %s need create serviceaccounts/token for any service account in namespace %q, and with that right the plugin refuses to issue for existing-account roles there; give them different namespaces", roleName, strings.Join(sortedKeys(who), ", "), ns))
				break
			}
		}
	}
	return notes
}

// commentedRule is one rule and the roles that need it.
type commentedRule struct {
	rule  rbacv1.PolicyRule
	roles []string
}

// buildRules turns single rights into rules: per resource, the verbs are
// merged (a verb needed on any object of it drops the names), then
// resources with the same verbs and names are merged.
func buildRules(rights map[rbacRight]map[string]bool) []commentedRule {
	type verbKey struct{ group, resource, verb, url string }
	names := map[verbKey]map[string]bool{}
	anyName := map[verbKey]bool{}
	who := map[verbKey]map[string]bool{}
	for right, roles := range rights {
		k := verbKey{right.group, right.resource, right.verb, right.url}
		if names[k] == nil {
			names[k], who[k] = map[string]bool{}, map[string]bool{}
		}
		if right.name == "" {
			anyName[k] = true
		} else {
			names[k][right.name] = true
		}
		for r := range roles {
			who[k][r] = true
		}
	}
	// Per resource (or URL) and set of names: the verbs.
	type resKey struct{ group, resource, names, url string }
	verbs := map[resKey][]string{}
	resWho := map[resKey]map[string]bool{}
	for k := range names {
		n := ""
		if !anyName[k] {
			n = strings.Join(sortedKeys(names[k]), "\x00")
		}
		rk := resKey{k.group, k.resource, n, k.url}
		verbs[rk] = append(verbs[rk], k.verb)
		if resWho[rk] == nil {
			resWho[rk] = map[string]bool{}
		}
		for r := range who[k] {
			resWho[rk][r] = true
		}
	}
	// Per group, verbs and names: the resources (or URLs).
	type ruleKey struct{ group, verbs, names string }
	type merged struct {
		resources, urls []string
		who             map[string]bool
	}
	rules := map[ruleKey]*merged{}
	for rk, vs := range verbs {
		sort.Strings(vs)
		key := ruleKey{rk.group, strings.Join(vs, ","), rk.names}
		if rk.url != "" {
			key.group = "\x00url" // never merged with resource rules
		}
		m := rules[key]
		if m == nil {
			m = &merged{who: map[string]bool{}}
			rules[key] = m
		}
		if rk.url != "" {
			m.urls = append(m.urls, rk.url)
		} else {
			m.resources = append(m.resources, rk.resource)
		}
		for r := range resWho[rk] {
			m.who[r] = true
		}
	}
	out := make([]commentedRule, 0, len(rules))
	for key, m := range rules {
		rule := rbacv1.PolicyRule{Verbs: strings.Split(key.verbs, ",")}
		if len(m.urls) > 0 {
			sort.Strings(m.urls)
			rule.NonResourceURLs = m.urls
		} else {
			sort.Strings(m.resources)
			rule.APIGroups = []string{key.group}
			rule.Resources = m.resources
			if key.names != "" {
				rule.ResourceNames = strings.Split(key.names, "\x00")
			}
		}
		out = append(out, commentedRule{rule: rule, roles: sortedKeys(m.who)})
	}
	sort.Slice(out, func(i, j int) bool { return ruleSortKey(out[i].rule) < ruleSortKey(out[j].rule) })
	return out
}

func ruleSortKey(r rbacv1.PolicyRule) string {
	return strings.Join([]string{strings.Join(r.NonResourceURLs, ","), strings.Join(r.APIGroups, ","), strings.Join(r.Resources, ","), strings.Join(r.ResourceNames, ","), strings.Join(r.Verbs, ",")}, "\x01")
}

// rbacDocument is a Role or ClusterRole whose rules carry comments, or a
// binding.
type rbacDocument struct {
	obj   interface{} // *rbacv1.Role, *rbacv1.ClusterRole, *rbacv1.RoleBinding, *rbacv1.ClusterRoleBinding
	rules []commentedRule
}

// roleDocuments is a Role in ns (a ClusterRole when ns is "") named name
// with the rules for rights, and its binding to subject.
func roleDocuments(subject rbacSubject, name, ns string, rights map[rbacRight]map[string]bool) []interface{} {
	rules := buildRules(rights)
	policy := make([]rbacv1.PolicyRule, len(rules))
	for i, r := range rules {
		policy[i] = r.rule
	}
	meta := metav1.ObjectMeta{Name: name, Namespace: ns}
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Name: name}
	subjects := []rbacv1.Subject{subject.subject}
	if ns == "" {
		ref.Kind = kindClusterRole
		return []interface{}{
			rbacDocument{obj: &rbacv1.ClusterRole{TypeMeta: typeMeta(kindClusterRole), ObjectMeta: meta, Rules: policy}, rules: rules},
			rbacDocument{obj: &rbacv1.ClusterRoleBinding{TypeMeta: typeMeta(kindClusterRoleBinding), ObjectMeta: meta, RoleRef: ref, Subjects: subjects}},
		}
	}
	ref.Kind = kindRole
	return []interface{}{
		rbacDocument{obj: &rbacv1.Role{TypeMeta: typeMeta(kindRole), ObjectMeta: meta, Rules: policy}, rules: rules},
		rbacDocument{obj: &rbacv1.RoleBinding{TypeMeta: typeMeta(kindRoleBinding), ObjectMeta: meta, RoleRef: ref, Subjects: subjects}},
	}
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: kind}
}

// renderManifests writes the documents as one YAML stream. sigs.k8s.io/yaml
// writes no comments, so a Role's rules are written one at a time, each
// after its comment, under a "rules:" key that the object itself marshals
// last (keys are sorted; "rules" sorts after the others). Every document is
// parsed back and compared with the object it came from.
func renderManifests(cluster string, docs []interface{}, roles []string) (string, error) {
	var out bytes.Buffer
	fmt.Fprintf(&out, "# RBAC for the plugin's identity on cluster %s, for roles: %s\n", cluster, rolesComment(roles))
	for i, d := range docs {
		doc := d.(rbacDocument)
		if i > 0 {
			out.WriteString("---\n")
		}
		text, err := renderDocument(doc)
		if err != nil {
			return "", err
		}
		out.Write(text)
	}
	return out.String(), nil
}

func rolesComment(roles []string) string {
	if len(roles) == 0 {
		return "(none)"
	}
	return strings.Join(roles, ", ")
}

func renderDocument(doc rbacDocument) ([]byte, error) {
	var header interface{}
	switch o := doc.obj.(type) {
	case *rbacv1.Role:
		c := o.DeepCopy()
		c.Rules = []rbacv1.PolicyRule{}
		header = c
	case *rbacv1.ClusterRole:
		c := o.DeepCopy()
		c.Rules = []rbacv1.PolicyRule{}
		header = c
	default:
		text, err := yaml.Marshal(doc.obj)
		if err != nil {
			return nil, fmt.Errorf("writing RBAC manifests: %w", err)
		}
		return text, checkRoundTrip(text, doc.obj)
	}
	text, err := yaml.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("writing RBAC manifests: %w", err)
	}
	const emptyRules = "rules: []\n"
	if !bytes.HasSuffix(text, []byte(emptyRules)) {
		return nil, errors.New("writing RBAC manifests: a Role's rules are not its last key")
	}
	var out bytes.Buffer
	out.Write(bytes.TrimSuffix(text, []byte(emptyRules)))
	out.WriteString("rules:\n")
	for _, r := range doc.rules {
		item, err := yaml.Marshal([]rbacv1.PolicyRule{r.rule})
		if err != nil {
			return nil, fmt.Errorf("writing RBAC manifests: %w", err)
		}
		out.WriteString(ruleComment(r.roles))
		out.Write(item)
	}
	return out.Bytes(), checkRoundTrip(out.Bytes(), doc.obj)
}

// ruleComment is the line above a rule; role names are Vault names
// (letters, digits, '-', '_', '.'), so they cannot end the comment.
func ruleComment(roles []string) string {
	if len(roles) == 1 && roles[0] == selfRotation {
		return "# self-rotation (rotate-root, rotation_period)\n"
	}
	return "# roles: " + rolesComment(roles) + "\n"
}

// checkRoundTrip parses text back into want's type and compares.
func checkRoundTrip(text []byte, want interface{}) error {
	got := reflect.New(reflect.TypeOf(want).Elem()).Interface()
	if err := yaml.UnmarshalStrict(text, got); err != nil {
		return fmt.Errorf("writing RBAC manifests: the output does not parse back: %w", err)
	}
	if !reflect.DeepEqual(normalizeRules(got), normalizeRules(want)) {
		return errors.New("writing RBAC manifests: the output does not parse back to what was written")
	}
	return nil
}

// normalizeRules clears what YAML does not distinguish (nil and empty lists).
func normalizeRules(obj interface{}) interface{} {
	fix := func(rules []rbacv1.PolicyRule) {
		for i := range rules {
			for _, l := range []*[]string{&rules[i].Verbs, &rules[i].APIGroups, &rules[i].Resources, &rules[i].ResourceNames, &rules[i].NonResourceURLs} {
				if len(*l) == 0 {
					*l = nil
				}
			}
		}
	}
	switch o := obj.(type) {
	case *rbacv1.Role:
		c := o.DeepCopy()
		fix(c.Rules)
		return c
	case *rbacv1.ClusterRole:
		c := o.DeepCopy()
		fix(c.Rules)
		return c
	}
	return obj
}
