package backend

import (
	"errors"
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// name_template names an ephemeral lease's objects. It runs at every role
// write and every issue, so rendering is bounded by construction: a short
// template, no loops or template calls, only functions whose output is
// bounded by their input, and a capped output.
const (
	maxNameTemplateBytes = 1024
	// maxRenderedBytes stops a render early; a valid name is far shorter.
	maxRenderedBytes = 256
	maxNameLength    = 63
	// minRandomChars is how much of random's output every name must hold:
	// 36^8 names, so no two leases share objects, whatever the template
	// does with .DisplayName.
	minRandomChars = 8
)

// nameTemplateData is what name_template can use.
type nameTemplateData struct {
	RoleName    string
	DisplayName string
	Namespace   string
}

var nameTemplateFields = map[string]bool{"RoleName": true, "DisplayName": true, "Namespace": true}

// nameTemplateCallable are the functions a template may call: the plugin's
// own and text/template's bounded comparisons. The other builtins are
// refused: printf and friends allocate any width asked for (%0100000000d),
// and index, slice, call, len, html, js and urlquery have no use in a name.
var nameTemplateCallable = map[string]bool{
	"random": true, "dns": true, "lowercase": true, "truncate": true, "unix_time": true,
	"eq": true, "ne": true, "and": true, "or": true, "not": true,
}

const nameTemplateHelp = "use text, actions, if/else, with, variables, constants, the fields .RoleName, .DisplayName and .Namespace, and the functions random, dns, lowercase, truncate, unix_time, eq, ne, and, or, not"

// nameRender is the state of one render. Each render has its own: the
// plugin is multiplexed and issues concurrently.
type nameRender struct {
	randoms []string // random's outputs long enough to make a name unique
}

func (r *nameRender) random(n int) (string, error) {
	if n < 1 || n > maxNameLength {
		return "", funcError(fmt.Sprintf("random takes a length from 1 to %d, got %d", maxNameLength, n))
	}
	s := randomString(n)
	if n >= minRandomChars {
		r.randoms = append(r.randoms, s)
	}
	return s, nil
}

// nameTemplateFuncs is the FuncMap of one render.
func nameTemplateFuncs(r *nameRender) template.FuncMap {
	return template.FuncMap{
		"random":    r.random,
		"unix_time": func() string { return fmt.Sprint(time.Now().Unix()) },
		"lowercase": strings.ToLower,
		"dns":       dnsLabelPart,
		"truncate": func(n int, s string) (string, error) {
			if n < 0 {
				return "", funcError(fmt.Sprintf("truncate takes a length of 0 or more, got %d", n))
			}
			if len(s) > n {
				return s[:n], nil
			}
			return s, nil
		},
	}
}

// renderName renders tmpl into the name of a lease's objects. Its errors
// are safe to show the caller: they quote at most a clipped piece of the
// template or of the rendered name.
func renderName(tmpl string, data nameTemplateData) (string, error) {
	if len(tmpl) > maxNameTemplateBytes {
		return "", fmt.Errorf("name_template is %d bytes long; at most %d are allowed", len(tmpl), maxNameTemplateBytes)
	}
	var r nameRender
	t, err := template.New("name_template").Option("missingkey=error").Funcs(nameTemplateFuncs(&r)).Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("name_template does not parse: %q", clip(strings.TrimPrefix(err.Error(), "template: ")))
	}
	for _, assoc := range t.Templates() {
		if assoc.Name() != t.Name() {
			return "", errors.New("name_template may not use define or block; " + nameTemplateHelp)
		}
	}
	if t.Tree == nil || t.Tree.Root == nil {
		return "", errors.New("name_template is empty")
	}
	if err := checkNameTemplateNode(t.Tree.Root); err != nil {
		return "", err
	}

	out := &cappedWriter{limit: maxRenderedBytes}
	if err := t.Execute(out, data); err != nil {
		if errors.Is(err, errRenderTooLong) {
			return "", fmt.Errorf("name_template renders more than %d bytes; a name has at most %d characters", maxRenderedBytes, maxNameLength)
		}
		var fe funcError
		if errors.As(err, &fe) {
			return "", fmt.Errorf("name_template does not render: %s", fe)
		}
		return "", fmt.Errorf("name_template does not render: %q", clip(execErrorDetail(err)))
	}
	name := out.b.String()
	if len(name) > maxNameLength {
		return "", fmt.Errorf("name_template renders %q, %d characters; at most %d are allowed", clip(name), len(name), maxNameLength)
	}
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return "", fmt.Errorf("name_template renders %q, which is not a valid Kubernetes name: %s", clip(name), strings.Join(errs, "; "))
	}
	if !r.uniqueName(name) {
		return "", fmt.Errorf("name_template renders %q, which does not hold an uncut {{ random %d }} (or longer); every name needs one so that each lease gets its own objects", clip(name), minRandomChars)
	}
	return name, nil
}

// funcError is a template function's own complaint, in the plugin's words:
// shown whole, unlike text/template's errors.
type funcError string

func (e funcError) Error() string { return string(e) }

// execErrorDetail drops text/template's location prefix ("template:
// name_template:1:3: executing "name_template" at <node>: "), which quotes
// the template, and keeps what went wrong.
func execErrorDetail(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ">: "); i >= 0 {
		return msg[i+len(">: "):]
	}
	return strings.TrimPrefix(msg, "template: ")
}

// uniqueName: name holds one of this render's random strings whole.
func (r *nameRender) uniqueName(name string) bool {
	for _, s := range r.randoms {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// checkNameTemplateNode refuses every construct but those whose cost is
// bounded by the template's own size: without range, each node runs at
// most once per render.
func checkNameTemplateNode(node parse.Node) error {
	switch n := node.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkNameTemplateNode(c); err != nil {
				return err
			}
		}
	case *parse.TextNode, *parse.CommentNode, *parse.StringNode, *parse.NumberNode, *parse.BoolNode, *parse.DotNode:
	case *parse.ActionNode:
		return checkNameTemplateNode(n.Pipe)
	case *parse.IfNode:
		return checkNameTemplateBranch(&n.BranchNode)
	case *parse.WithNode:
		return checkNameTemplateBranch(&n.BranchNode)
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, v := range n.Decl {
			if err := checkNameTemplateNode(v); err != nil {
				return err
			}
		}
		for _, c := range n.Cmds {
			if err := checkNameTemplateNode(c); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if err := checkNameTemplateNode(a); err != nil {
				return err
			}
		}
	case *parse.IdentifierNode:
		if !nameTemplateCallable[n.Ident] {
			return fmt.Errorf("name_template may not call %q; %s", clip(n.Ident), nameTemplateHelp)
		}
	case *parse.FieldNode:
		if len(n.Ident) != 1 || !nameTemplateFields[n.Ident[0]] {
			return fmt.Errorf("name_template does not render: it uses %q, which is not one of .RoleName, .DisplayName and .Namespace", clip("."+strings.Join(n.Ident, ".")))
		}
	case *parse.VariableNode:
		// $x, $, or $.Field
		if len(n.Ident) > 1 && (len(n.Ident) != 2 || n.Ident[0] != "$" || !nameTemplateFields[n.Ident[1]]) {
			return fmt.Errorf("name_template does not render: it uses %q, which is not a variable or one of $.RoleName, $.DisplayName and $.Namespace", clip(strings.Join(n.Ident, ".")))
		}
	case *parse.RangeNode:
		return errors.New("name_template may not use range: a name is rendered at every issue and must cost little; " + nameTemplateHelp)
	case *parse.TemplateNode:
		return errors.New("name_template may not use template or block; " + nameTemplateHelp)
	default:
		// break, continue, nil, (pipeline).Field chains, and whatever
		// text/template adds later.
		return errors.New("name_template uses a construct that is not allowed; " + nameTemplateHelp)
	}
	return nil
}

func checkNameTemplateBranch(n *parse.BranchNode) error {
	for _, c := range []parse.Node{n.Pipe, n.List, n.ElseList} {
		if err := checkNameTemplateNode(c); err != nil {
			return err
		}
	}
	return nil
}

var errRenderTooLong = errors.New("rendered name too long")

// cappedWriter fails once more than limit bytes were written, so even a
// construct the checks missed cannot build a large output.
type cappedWriter struct {
	b     strings.Builder
	limit int
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.limit {
		return 0, errRenderTooLong
	}
	return w.b.Write(p)
}

// validateNameTemplate renders the template with awkward inputs at role
// write; renderName repeats every check at each issue, where .DisplayName
// and .Namespace are the real ones.
func validateNameTemplate(tmpl string) error {
	sample := nameTemplateData{RoleName: "Some_Role.Name-With-A-Long-Suffix", DisplayName: "oidc-Jane.Doe@example.com", Namespace: "team-a"}
	_, err := renderName(tmpl, sample)
	return err
}

// dnsLabelPart lowercases s, turns anything a DNS label cannot hold into
// '-', cuts it to n characters and trims '-' at both ends.
func dnsLabelPart(n int, s string) (string, error) {
	if n < 0 {
		return "", funcError(fmt.Sprintf("dns takes a length of 0 or more, got %d", n))
	}
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	if len(b) > n {
		b = b[:n]
	}
	return strings.Trim(string(b), "-"), nil
}
