package backend

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/apimachinery/pkg/util/validation"
)

var sampleNameData = nameTemplateData{RoleName: "Some_Role.Name", DisplayName: "oidc-Jane.Doe@example.com", Namespace: "team-a"}

func TestRenderNameAccepted(t *testing.T) {
	for _, tmpl := range []string{
		defaultNameTemplate,
		`{{ random 8 }}`,
		`x{{ random 62 }}`,
		`x-{{ lowercase (random 10) }}`,
		`{{ truncate 8 (random 8) }}`,
		`{{ $r := random 8 }}{{ dns 10 .RoleName }}-{{ $r }}`,
		`{{ $r := "" }}{{ $r = random 9 }}n-{{ $r }}`,
		`{{ if eq .Namespace "team-a" }}a{{ else if ne .RoleName "" }}b{{ end }}-{{ random 8 }}`,
		`{{ with .Namespace }}{{ . }}{{ else }}none{{ end }}-{{ random 8 }}`,
		`{{ $.Namespace }}-{{ random 8 }}`,
		`{{/* a comment */}}n-{{ random 8 }}`,
		`{{ if and true (not false) (or 0 1) }}a{{ end }}-{{ random 8 }}`,
		`u{{ unix_time }}-{{ random 8 }}`,
		`{{ dns 0 .DisplayName }}n-{{ random 8 }}`,
	} {
		t.Run(tmpl, func(t *testing.T) {
			name, err := renderName(tmpl, sampleNameData)
			if err != nil {
				t.Fatal(err)
			}
			if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
				t.Fatalf("rendered %q: %v", name, errs)
			}
		})
	}
}

// Every construct whose cost or output is not bounded by the template's
// own size is refused at role write, with a 400 and a short message.
func TestNameTemplateRefused(t *testing.T) {
	tests := []struct {
		name, tmpl, want string
	}{
		{"range over a large int", `{{range 30000000}}x{{end}}`, "may not use range"},
		{"range with a variable", `{{range $i := 3}}x{{end}}-{{random 8}}`, "may not use range"},
		{"break in a range", `{{range 1}}{{break}}{{end}}{{random 8}}`, "may not use range"},
		{"break outside a range", `{{break}}{{random 8}}`, "does not parse"},
		{"template call", `{{template "x"}}{{random 8}}`, "may not use template"},
		{"define", `{{define "x"}}a{{end}}{{random 8}}`, "may not use define"},
		{"block", `{{block "x" .}}a{{end}}{{random 8}}`, "may not use define or block"},
		{"printf with a huge width", `{{ printf "%0100000000d" 1 }}{{random 8}}`, `may not call "printf"`},
		{"print", `{{ print .RoleName }}{{random 8}}`, `may not call "print"`},
		{"println", `{{ println }}{{random 8}}`, `may not call "println"`},
		{"index", `{{ index .RoleName 0 }}{{random 8}}`, `may not call "index"`},
		{"slice", `{{ slice .RoleName 0 1 }}{{random 8}}`, `may not call "slice"`},
		{"call", `{{ call .RoleName }}{{random 8}}`, `may not call "call"`},
		{"len", `{{ len .RoleName }}{{random 8}}`, `may not call "len"`},
		{"html", `{{ html .RoleName }}{{random 8}}`, `may not call "html"`},
		{"js", `{{ js .RoleName }}{{random 8}}`, `may not call "js"`},
		{"urlquery", `{{ urlquery .RoleName }}{{random 8}}`, `may not call "urlquery"`},
		{"builtin as an argument", `{{ lowercase (printf "%d" 1) }}{{random 8}}`, `may not call "printf"`},
		{"builtin in an if", `{{ if len .RoleName }}a{{ end }}{{random 8}}`, `may not call "len"`},
		{"builtin in a with", `{{ with $x := print 1 }}a{{ end }}{{random 8}}`, `may not call "print"`},
		{"builtin in an else", `{{ if true }}a{{ else }}{{ print 1 }}{{ end }}{{random 8}}`, `may not call "print"`},
		{"undefined function", `{{ sprig }}{{random 8}}`, "does not parse"},
		{"unknown field", `{{ .Nope }}-{{ random 8 }}`, "does not render"},
		{"field of a field", `{{ .RoleName.Len }}-{{ random 8 }}`, "not one of .RoleName"},
		{"unknown field of $", `{{ $.Nope }}-{{ random 8 }}`, "not a variable or one of"},
		{"field of a variable", `{{ $x := .RoleName }}{{ $x.Len }}-{{ random 8 }}`, "not a variable or one of"},
		{"field of a pipeline", `{{ (.RoleName).Len }}-{{ random 8 }}`, "not allowed"},
		{"nil", `{{ eq nil 1 }}-{{ random 8 }}`, "not allowed"},
		{"template too long", "{{ random 8 }}" + strings.Repeat("a", 1024), "at most 1024"},
		{"output above the writer's cap", "{{ random 8 }}" + strings.Repeat("a", 300), "more than 256 bytes"},
		{"constant above the writer's cap", `{{ random 8 }}{{ "` + strings.Repeat("a", 300) + `" }}`, "more than 256 bytes"},
		{"name too long", "x{{ random 63 }}", "at most 63"},
		{"random cut below 8", `{{ truncate 5 (random 10) }}`, "random 8"},
		{"random cut by dns", `n-{{ dns 7 (random 10) }}`, "random 8"},
		{"random of 7", `n-{{ random 7 }}`, "random 8"},
		{"two short randoms", `{{ random 4 }}{{ random 4 }}`, "random 8"},
		{"fixed name", `cluster-admin`, "random 8"},
		{"random only in a variable", `{{ $r := random 10 }}fixed`, "random 8"},
		{"negative truncate", `{{ truncate -1 .RoleName }}-{{ random 8 }}`, "truncate takes a length of 0 or more, got -1"},
		{"negative dns", `{{ dns -1 .RoleName }}-{{ random 8 }}`, "dns takes a length of 0 or more, got -1"},
		{"random too long", `{{ random 64 }}`, "random takes a length from 1 to 63, got 64"},
		{"huge number", `{{ random 99999999999999999999 }}`, "does not"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureCluster(t, b, s)
			resp, err := request(t, b, s, logical.CreateOperation, "roles/eph", map[string]interface{}{
				"cluster": testCluster, "kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a",
				"name_template": tc.tmpl,
			})
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("want a 400, got %#v, %v", resp, err)
			}
			msg := resp.Error().Error()
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q does not mention %q", msg, tc.want)
			}
			if len(msg) > 512 || strings.Contains(msg, strings.Repeat("a", clipBytes+1)) {
				t.Fatalf("error is %d bytes long: %.200q", len(msg), msg)
			}
			if role, _ := getRole(context.Background(), s, "eph"); role != nil {
				t.Fatal("a refused role was stored")
			}
		})
	}
}

// The uniqueness check runs at every issue, not only at write: a template
// may branch on .DisplayName, which only the issue knows.
func TestRenderNameUniqueAtIssue(t *testing.T) {
	b, s, fk := ephemeralBackend(t, map[string]interface{}{
		"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a",
		"name_template": `{{ if eq .DisplayName "token-admin" }}cluster-admin{{ else }}x-{{ random 8 }}{{ end }}`,
	})
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/eph", Storage: s, DisplayName: "token-admin"}
	resp, err := b.HandleRequest(context.Background(), req)
	if err != nil || resp == nil || !resp.IsError() {
		t.Fatalf("want a 400, got %#v, %v", resp, err)
	}
	if msg := resp.Error().Error(); !strings.Contains(msg, `renders "cluster-admin"`) || !strings.Contains(msg, "random 8") {
		t.Fatalf("error %q does not explain the refusal", msg)
	}
	if n := len(fk.tokenRequests()); n != 0 {
		t.Fatalf("%d TokenRequests for a refused name", n)
	}
	for kind, n := range leaseKubeObjects(t, fk) {
		if n != 0 {
			t.Errorf("%d %s objects created for a refused name", n, kind)
		}
	}

	req.DisplayName = "token-jane"
	resp, err = b.HandleRequest(context.Background(), req)
	if err != nil || resp.IsError() {
		t.Fatalf("issue for another display name: %v %v", err, resp.Error())
	}
}

// Renders share no state: concurrent issues each get their own name.
func TestRenderNameConcurrent(t *testing.T) {
	const n = 64
	names := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name, err := renderName(`n-{{ random 8 }}`, sampleNameData)
			if err != nil {
				t.Error(err)
			}
			names[i] = name
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			t.Fatalf("name %q rendered twice", name)
		}
		seen[name] = true
	}
}

// FuzzRenderName: any template renders a valid, unique-by-construction
// name or is refused with a short message.
func FuzzRenderName(f *testing.F) {
	f.Add(defaultNameTemplate, "role", "oidc-jane", "team-a")
	f.Add(`{{range 30000000}}x{{end}}`, "r", "d", "n")
	f.Add(`{{ printf "%0100000000d" 1 }}`, "r", "d", "n")
	f.Add(`{{ if eq .DisplayName "x" }}cluster-admin{{ else }}{{ random 8 }}{{ end }}`, "r", "x", "n")
	f.Add(`{{ truncate 5 (random 10) }}`, "r", "d", "n")
	f.Fuzz(func(t *testing.T, tmpl, role, display, ns string) {
		name, err := renderName(tmpl, nameTemplateData{RoleName: role, DisplayName: display, Namespace: ns})
		if err != nil {
			if len(err.Error()) > 512 {
				t.Fatalf("error is %d bytes long", len(err.Error()))
			}
			return
		}
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Fatalf("rendered %q: %v", name, errs)
		}
		if !strings.Contains(tmpl, "random") {
			t.Fatalf("rendered %q from a template without random", name)
		}
	})
}
