package main

// The YAML under task/ and pipelines/ is how Tekton and Argo run this binary.
// These tests validate every document against strict JSON schemas
// (testdata/schemas), then check what no schema can: variable references,
// flags and environment variables against the binary's own flag sets, the
// declared results against the files a real run writes, image pinning,
// privilege and node placement, and that kustomize installs every file.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

const (
	// repoRoot is the repository root seen from this package's directory.
	repoRoot = "../.."
	// binaryPath is where the Containerfile installs the binary; steps and
	// containers name it as their command.
	binaryPath = "/usr/local/bin/etcd-backup"
	// tektonResultsDir is where Tekton collects step results from.
	tektonResultsDir = "/tekton/results"
	// backupServiceAccount is bound to the privileged SCC in pipelines/base.
	backupServiceAccount = "etcd-backup"
)

// yamlRoots are the folders whose YAML is checked, from the repository root.
var yamlRoots = []string{"task", "pipelines"}

// pinnedImage is an image reference pinned by digest (placeholders included:
// they are replaced by digest at release).
var pinnedImage = regexp.MustCompile(`^[^@\s]+@sha256:[0-9a-f]{64}$`)

// Variable references: Tekton's $(...) and Argo's {{...}}.
var (
	tektonRef = regexp.MustCompile(`\$\(([^)]*)\)`)
	argoRef   = regexp.MustCompile(`\{\{\s*([^}]*?)\s*\}\}`)

	tektonParamRef     = regexp.MustCompile(`^params(?:\.([-\w]+)|\[["']([^"']+)["']\])(?:\[\*\]|\.[-\w]+)?$`)
	tektonResultRef    = regexp.MustCompile(`^results\.([-\w]+)\.path$`)
	tektonWorkspaceRef = regexp.MustCompile(`^workspaces\.([-\w]+)\.(?:path|bound|claim|volume)$`)
	tektonTaskResult   = regexp.MustCompile(`^tasks\.([-\w]+)\.results\.([-\w]+)(?:\.[-\w]+|\[\*\])?$`)
	argoInputRef       = regexp.MustCompile(`^inputs\.parameters\.([-\w]+)$`)
	argoWorkflowRef    = regexp.MustCompile(`^workflow\.parameters\.([-\w]+)$`)

	// refAllowed lists the fields a variable may appear in: values handed to
	// the binary as arguments or environment, never a script or a command.
	refAllowed = regexp.MustCompile(`(\.image|\.args\[\d+\]|\.env\[\d+\]\.value|\.workingDir|\.params\[\d+\]\.value|\.results\[\d+\]\.value|\.parameters\[\d+\]\.value)$`)
)

// Environment variables steps may set that are not flags of the binary:
// Google's credentials, and Go's directories of CA certificates to trust.
var foreignEnv = []string{"GOOGLE_APPLICATION_CREDENTIALS", "SSL_CERT_DIR"}

// masterTaints must all be tolerated by pods that run save.
var masterTaints = []string{"node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane"}

// yamlDoc is one document of a YAML file.
type yamlDoc struct {
	file  string // slash-separated, relative to the repository root
	index int    // position in the file
	obj   map[string]any
}

func (d *yamlDoc) String() string { return fmt.Sprintf("%s#%d", d.file, d.index) }
func (d *yamlDoc) kind() string   { return ystr(d.obj, "kind") }
func (d *yamlDoc) name() string   { return ystr(d.obj, "metadata", "name") }

// schemaPath is where the document's schema lives, in the kubeconform layout.
func (d *yamlDoc) schemaPath() string {
	group, version, ok := strings.Cut(ystr(d.obj, "apiVersion"), "/")
	if !ok {
		group, version = "core", group
	}
	return filepath.Join("testdata", "schemas", group, strings.ToLower(d.kind())+"_"+version+".json")
}

// yamlSuite holds the documents, indexed for cross-document checks, and
// what the binary really writes.
type yamlSuite struct {
	docs      []*yamlDoc
	byKind    map[string]map[string]*yamlDoc // kind, metadata.name
	compiler  *jsonschema.Compiler
	schemas   map[string]*jsonschema.Schema
	results   map[string]map[string]string // subcommand: result name: value, from real runs
	generated map[string]bool              // files kustomize packs into ConfigMaps
}

func TestYAML(t *testing.T) {
	s := &yamlSuite{
		byKind:    map[string]map[string]*yamlDoc{},
		compiler:  jsonschema.NewCompiler(),
		schemas:   map[string]*jsonschema.Schema{},
		results:   realResults(t),
		generated: map[string]bool{},
	}
	s.load(t)
	checks := map[string]func(*testing.T, *yamlDoc){
		"Task":             s.checkTask,
		"Pipeline":         s.checkPipeline,
		"TaskRun":          s.checkTaskRun,
		"PipelineRun":      s.checkPipelineRun,
		"WorkflowTemplate": s.checkWorkflowTemplate,
		"CronWorkflow":     s.checkCronWorkflow,
		"CronJob":          s.checkCronJob,
		"Kustomization":    s.checkKustomization,
	}
	for _, d := range s.docs {
		t.Run(d.String(), func(t *testing.T) {
			s.checkSchema(t, d)
			checkRefPlacement(t, d)
			checkPrivilege(t, d)
			if check := checks[d.kind()]; check != nil {
				check(t, d)
			}
		})
	}
	t.Run("kustomize installs every file", s.checkCoverage)
	t.Run("Tekton and Argo give the same results", s.checkSameResults)
	t.Run("one federation configuration serves Tekton and Argo", s.checkFederationToken)
}

// federationSample is the PipelineRun that binds a credential configuration
// of Workload Identity Federation, and says how to make it.
const federationSample = "pipelines/tekton/samples/pipelinerun-workload-identity-federation.yaml"

// checkFederationToken: the credential configuration names the path of the
// ServiceAccount token in the pod, which the sample's gcloud command fixes.
// Each engine must project the token there: a configuration that reads no
// token fails every upload.
func (s *yamlSuite) checkFederationToken(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, federationSample))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--credential-source-file=(\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s makes no configuration with --credential-source-file", federationSample)
	}
	want := string(m[1])
	tokenPath := func(v any) string {
		for _, src := range ylist(v, "projected", "sources") {
			if p := ystr(src, "serviceAccountToken", "path"); p != "" {
				return p
			}
		}
		return ""
	}
	check := func(where, mount, token string) {
		if token == "" {
			t.Errorf("%s: gcs-credentials projects no ServiceAccount token", where)
		} else if got := path.Join(mount, token); got != want {
			t.Errorf("%s: the token is at %s, the configuration reads %s", where, got, want)
		}
	}
	task := s.byKind["Task"]["etcd-backup"]
	i := slices.IndexFunc(ylist(task.obj, "spec", "workspaces"), func(w any) bool { return ystr(w, "name") == "gcs-credentials" })
	if i < 0 {
		t.Fatal("Task etcd-backup has no gcs-credentials workspace")
	}
	mount := ystr(task.obj, "spec", "workspaces", fmt.Sprint(i), "mountPath")
	for _, d := range s.docs {
		if d.file != federationSample {
			continue
		}
		for _, w := range ylist(d.obj, "spec", "workspaces") {
			if ystr(w, "name") == "gcs-credentials" {
				check(d.String(), mount, tokenPath(w))
			}
		}
	}
	for _, d := range s.byKind["WorkflowTemplate"] {
		for _, tmpl := range ylist(d.obj, "spec", "templates") {
			where := d.String() + " template " + ystr(tmpl, "name")
			// A copy: the parsed documents are every check's to read.
			containers := slices.Concat(ylist(tmpl, "containerSet", "containers"), []any{ymap(tmpl, "container")})
			for _, v := range ylist(tmpl, "volumes") {
				if ystr(v, "name") != "gcs-credentials" {
					continue
				}
				for _, c := range containers {
					for _, vm := range ylist(c, "volumeMounts") {
						if ystr(vm, "name") == "gcs-credentials" {
							check(where, ystr(vm, "mountPath"), tokenPath(v))
						}
					}
				}
			}
		}
	}
}

// checkSameResults: a pipeline built on either engine gets the same results
// from a backup.
func (s *yamlSuite) checkSameResults(t *testing.T) {
	task, wft := s.byKind["Task"]["etcd-backup"], s.byKind["WorkflowTemplate"]["etcd-backup"]
	if task == nil || wft == nil {
		t.Fatal("no Task or WorkflowTemplate etcd-backup")
	}
	i := slices.IndexFunc(ylist(wft.obj, "spec", "templates"), func(tmpl any) bool { return ystr(tmpl, "name") == "backup" })
	if i < 0 {
		t.Fatal("WorkflowTemplate etcd-backup has no template backup")
	}
	tekton := sorted(names(ylist(task.obj, "spec", "results")))
	argo := sorted(names(ylist(wft.obj, "spec", "templates", fmt.Sprint(i), "outputs", "parameters")))
	if !slices.Equal(tekton, argo) {
		t.Errorf("the Task's results %v, the Argo backup template's outputs %v", tekton, argo)
	}
}

// realResults runs the commands the YAML uses against a real etcd (and a
// Cloud Storage emulator) and returns the result files each wrote: the
// Tasks must declare exactly these.
func realResults(t *testing.T) map[string]map[string]string {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{})
	dir := filepath.Join(t.TempDir(), "backup")
	out := map[string]map[string]string{}
	out["save"] = runForResults(t, nil, "save", "--host-root", c.HostRoot, "--node-name", c.NodeName, dir)
	out["verify"] = runForResults(t, nil, "verify", "--restore", "--scratch-dir", t.TempDir(), dir)
	// upload is being built in parallel with these tests; until it exists,
	// the YAML that runs it fails on the unknown command instead.
	if slices.ContainsFunc(commands(), func(c *command) bool { return c.name == "upload" }) {
		env := map[string]string{"STORAGE_EMULATOR_HOST": gcstest.New(t, "backups").Host()}
		out["upload"] = runForResults(t, env, "upload", dir, "gs://backups/etcd")
		// A Task writes every result it declares on every successful path:
		// with no destination, the same results, empty.
		skipped := runForResults(t, nil, "upload", "--skip-if-no-dest", dir)
		if got, want := slices.Sorted(maps.Keys(skipped)), slices.Sorted(maps.Keys(out["upload"])); !slices.Equal(got, want) {
			t.Errorf("upload --skip-if-no-dest with no DEST wrote results %v, a real upload %v", got, want)
		}
	}
	return out
}

// runForResults runs one command with --results-dir and only env in the
// environment, and returns the result files it wrote.
func runForResults(t *testing.T, env map[string]string, command string, args ...string) map[string]string {
	t.Helper()
	rd := t.TempDir()
	argv := append([]string{command, "--results-dir", rd}, args...)
	var stdout, stderr bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if code := run(t.Context(), argv, lookup, &stdout, &stderr); code != 0 {
		t.Fatalf("etcd-backup %s: exit %d\n%s", strings.Join(argv, " "), code, stderr.String())
	}
	entries, err := os.ReadDir(rd)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(rd, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		res[e.Name()] = string(b)
	}
	return res
}

// load reads every YAML document under yamlRoots.
func (s *yamlSuite) load(t *testing.T) {
	t.Helper()
	for _, root := range yamlRoots {
		err := filepath.WalkDir(filepath.Join(repoRoot, root), func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !isYAML(p) {
				return err
			}
			// promtool unit tests, not Kubernetes objects: internal/metrics runs them.
			if filepath.Base(filepath.Dir(p)) == "tests" && filepath.Base(filepath.Dir(filepath.Dir(p))) == "monitoring" {
				return nil
			}
			rel, err := filepath.Rel(repoRoot, p)
			if err != nil {
				return err
			}
			return s.loadFile(filepath.ToSlash(rel))
		})
		if err != nil {
			t.Fatalf("read %s: %v", root, err)
		}
	}
	if len(s.docs) == 0 {
		t.Fatal("no YAML documents found")
	}
}

func isYAML(p string) bool { return strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml") }

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func (s *yamlSuite) loadFile(rel string) error {
	data, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		return err
	}
	for i, chunk := range docSeparator.Split(string(data), -1) {
		// Strict: a duplicated key is an error, not a silent override.
		j, err := yaml.YAMLToJSONStrict([]byte(chunk))
		if err != nil {
			return fmt.Errorf("%s#%d: %w", rel, i, err)
		}
		if string(j) == "null" { // comments only
			continue
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			return fmt.Errorf("%s#%d: %w", rel, i, err)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s#%d: not a mapping", rel, i)
		}
		d := &yamlDoc{file: rel, index: i, obj: obj}
		s.docs = append(s.docs, d)
		if s.byKind[d.kind()] == nil {
			s.byKind[d.kind()] = map[string]*yamlDoc{}
		}
		if d.name() != "" {
			s.byKind[d.kind()][d.name()] = d
		}
		if d.kind() == "Kustomization" {
			for _, g := range ylist(obj, "configMapGenerator") {
				for _, f := range ylist(g, "files") {
					s.generated[path.Join(path.Dir(rel), f.(string))] = true
				}
			}
		}
	}
	return nil
}

// checkSchema validates d against the strict schema of its kind; a kind
// with no schema fails.
func (s *yamlSuite) checkSchema(t *testing.T, d *yamlDoc) {
	p := d.schemaPath()
	sch, ok := s.schemas[p]
	if !ok {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("no schema for %s %s (want %s)", ystr(d.obj, "apiVersion"), d.kind(), p)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		if sch, err = s.compiler.Compile(abs); err != nil {
			t.Fatalf("compile %s: %v", p, err)
		}
		s.schemas[p] = sch
	}
	if err := sch.Validate(any(d.obj)); err != nil {
		t.Errorf("does not match %s:\n%v", p, err)
	}
	if d.name() == "" && ystr(d.obj, "metadata", "generateName") == "" && d.kind() != "Kustomization" {
		t.Error("no metadata.name or generateName")
	}
}

// checkRefPlacement fails scripts, shells and variables anywhere but in
// arguments, environment values, images and parameter values: a parameter
// must never become code.
func checkRefPlacement(t *testing.T, d *yamlDoc) {
	if d.kind() == "PrometheusRule" {
		return // {{ }} there are Prometheus alert templates, run by no engine
	}
	walk(d.obj, "", func(p string, v any) {
		if strings.HasSuffix(p, ".script") {
			t.Errorf("%s: scripts are not allowed; pass values through args or env", p)
		}
		str, ok := v.(string)
		if !ok {
			return
		}
		if (tektonRef.MatchString(str) || argoRef.MatchString(str)) && !refAllowed.MatchString(p) {
			t.Errorf("%s: variable in %q; only args, env values, images and param values may hold one", p, str)
		}
		if strings.HasSuffix(p, ".command[0]") && slices.Contains([]string{"sh", "bash"}, path.Base(str)) {
			t.Errorf("%s: a shell as command; run the binary directly", p)
		}
	})
}

// checkPrivilege allows privileged: true only on a container that runs
// `etcd-backup save`, and requires it there.
func checkPrivilege(t *testing.T, d *yamlDoc) {
	walk(d.obj, "", func(p string, v any) {
		c, ok := v.(map[string]any)
		if !ok || c["image"] == nil {
			return
		}
		priv := ybool(c, "securityContext", "privileged")
		save := runsBinary(c) && ystr(c, "args", "0") == "save"
		switch {
		case priv && !save:
			t.Errorf("%s: privileged, but only the save step may be", p)
		case save && !priv:
			t.Errorf("%s: the save step must be privileged to read the host's etcd files", p)
		}
	})
}

func runsBinary(container any) bool {
	return slices.Equal(ystrs(container, "command"), []string{binaryPath})
}

// invocation is what one step or container asks of the binary.
type invocation struct {
	command    string
	resultsDir string
}

// checkInvocation checks args and env of a container that runs the binary
// against the command's own flag set: every flag exists, literal values
// parse, and every ETCD_BACKUP_ variable names a flag or an argument.
func checkInvocation(t *testing.T, where string, c any) invocation {
	args := ystrs(c, "args")
	if len(args) == 0 {
		t.Errorf("%s: no command in args", where)
		return invocation{}
	}
	i := slices.IndexFunc(commands(), func(cmd *command) bool { return cmd.name == args[0] })
	if i < 0 {
		t.Errorf("%s: the binary has no command %q", where, args[0])
		return invocation{}
	}
	cmd := commands()[i]
	flags, _, _ := newFlagSet(cmd)
	inv := invocation{command: cmd.name}
	positional := 0
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			positional++
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		f := flags.Lookup(name)
		if !strings.HasPrefix(a, "--") || f == nil {
			t.Errorf("%s: %s %s has no flag %s", where, binaryPath, cmd.name, a)
			continue
		}
		if f.Value.Type() != "bool" && !hasVal {
			if i++; i == len(args) {
				t.Errorf("%s: %s needs a value", where, a)
				break
			}
			val = args[i]
		}
		if name == "results-dir" {
			inv.resultsDir = val
		}
		checkValue(t, where, flags.Set, name, val)
	}
	if positional > len(cmd.args) {
		t.Errorf("%s: %d arguments, %s takes %s", where, positional, cmd.name, strings.Join(cmd.args, " "))
	}
	for _, e := range ylist(c, "env") {
		name, val := ystr(e, "name"), ystr(e, "value")
		key, ours := strings.CutPrefix(name, envPrefix)
		flag := strings.ToLower(strings.ReplaceAll(key, "_", "-"))
		switch {
		case ours && flags.Lookup(flag) != nil:
			checkValue(t, where, flags.Set, flag, val)
		case ours && slices.Contains(cmd.args, key):
		case !ours && slices.ContainsFunc(slices.Collect(maps.Keys(standardEnv)), func(f string) bool {
			return standardEnv[f] == name && flags.Lookup(f) != nil
		}):
		case slices.Contains(foreignEnv, name):
		default:
			t.Errorf("%s: env %s is neither a flag nor an argument of %s %s", where, name, binaryPath, cmd.name)
		}
	}
	return inv
}

// checkValue sets a literal value on the flag set to see that it parses;
// a variable is checked where it is declared instead.
func checkValue(t *testing.T, where string, set func(string, string) error, flag, val string) {
	if val == "" || tektonRef.MatchString(val) || argoRef.MatchString(val) {
		return
	}
	if err := set(flag, val); err != nil {
		t.Errorf("%s: --%s %q: %v", where, flag, val, err)
	}
}

// checkImage wants an image pinned by digest, or a variable naming one.
func checkImage(t *testing.T, where, image string) {
	if image == "$(params.IMAGE)" || image == "{{inputs.parameters.image}}" {
		return
	}
	if !pinnedImage.MatchString(image) {
		t.Errorf("%s: image %q is not pinned by digest (name@sha256:<64 hex>)", where, image)
	}
}

// checkImageParams wants every parameter named image to default to, or be
// given, an image pinned by digest.
func checkImageParams(t *testing.T, where string, params []any, valueKey string) {
	for _, p := range params {
		if strings.EqualFold(ystr(p, "name"), "image") {
			if v, ok := ymap(p)[valueKey].(string); ok {
				checkImage(t, where+" param "+ystr(p, "name"), v)
			}
		}
	}
}

// tektonRefs collects the $(...) references in v, failing unknown ones.
type tektonRefs struct {
	params, results, workspaces map[string]bool
	taskResults                 [][2]string
}

func collectTektonRefs(t *testing.T, v any) tektonRefs {
	r := tektonRefs{params: map[string]bool{}, results: map[string]bool{}, workspaces: map[string]bool{}}
	walk(v, "", func(p string, v any) {
		str, _ := v.(string)
		for _, m := range tektonRef.FindAllStringSubmatch(str, -1) {
			ref := m[1]
			if sm := tektonParamRef.FindStringSubmatch(ref); sm != nil {
				r.params[sm[1]+sm[2]] = true
			} else if sm := tektonResultRef.FindStringSubmatch(ref); sm != nil {
				r.results[sm[1]] = true
			} else if sm := tektonWorkspaceRef.FindStringSubmatch(ref); sm != nil {
				r.workspaces[sm[1]] = true
			} else if sm := tektonTaskResult.FindStringSubmatch(ref); sm != nil {
				r.taskResults = append(r.taskResults, [2]string{sm[1], sm[2]})
			} else if !strings.HasPrefix(ref, "context.") {
				t.Errorf("%s: unknown variable $(%s)", p, ref)
			}
		}
	})
	return r
}

// checkDeclaredUsed compares declared names with used ones, both ways.
func checkDeclaredUsed(t *testing.T, what string, declared []string, used map[string]bool) {
	for name := range used {
		if !slices.Contains(declared, name) {
			t.Errorf("%s %q is used but not declared", what, name)
		}
	}
	for _, name := range declared {
		if !used[name] {
			t.Errorf("%s %q is declared but never used", what, name)
		}
	}
}

func (s *yamlSuite) checkTask(t *testing.T, d *yamlDoc) {
	spec := ymap(d.obj, "spec")
	refs := collectTektonRefs(t, spec)
	checkDeclaredUsed(t, "param", names(ylist(spec, "params")), refs.params)
	for _, w := range ylist(spec, "workspaces") {
		// A workspace with a fixed mountPath is used by being mounted.
		if ystr(w, "mountPath") != "" {
			refs.workspaces[ystr(w, "name")] = true
		}
	}
	checkDeclaredUsed(t, "workspace", names(ylist(spec, "workspaces")), refs.workspaces)
	checkImageParams(t, "spec.params", ylist(spec, "params"), "default")

	written := map[string]string{}
	for i, step := range ylist(spec, "steps") {
		where := fmt.Sprintf("spec.steps[%d] %s", i, ystr(step, "name"))
		checkImage(t, where, ystr(step, "image"))
		if !runsBinary(step) {
			t.Errorf("%s: command is not [%s]", where, binaryPath)
			continue
		}
		inv := checkInvocation(t, where, step)
		var mounts []string
		for _, w := range ylist(spec, "workspaces") {
			mounts = append(mounts, ystr(w, "mountPath"))
		}
		checkCertDirs(t, where, step, mounts, true)
		if inv.resultsDir == "" {
			continue
		}
		if inv.resultsDir != tektonResultsDir {
			t.Errorf("%s: --results-dir %s, want %s", where, inv.resultsDir, tektonResultsDir)
		}
		res, ok := s.results[inv.command]
		if !ok {
			t.Errorf("%s: no real run of %q to compare results with", where, inv.command)
		}
		maps.Copy(written, res)
	}
	declared := names(ylist(spec, "results"))
	for name := range refs.results {
		if !slices.Contains(declared, name) {
			t.Errorf("$(results.%s.path) is not a declared result", name)
		}
	}
	if got, want := sorted(declared), sorted(slices.Collect(maps.Keys(written))); !slices.Equal(got, want) {
		t.Errorf("results declared %v, but the binary writes %v", got, want)
	}
	for _, r := range ylist(spec, "results") {
		checkObjectResult(t, r, written[ystr(r, "name")])
	}
	if strings.HasPrefix(d.file, "task/") {
		s.checkCatalog(t, d)
	}
}

// checkObjectResult compares an object result's declared properties with
// the keys of the JSON the binary wrote.
func checkObjectResult(t *testing.T, r any, value string) {
	if ystr(r, "type") != "object" || value == "" {
		return
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(value), &obj); err != nil {
		t.Errorf("result %s: the binary wrote no JSON object: %v", ystr(r, "name"), err)
		return
	}
	got, want := sorted(slices.Collect(maps.Keys(ymap(r, "properties")))), sorted(slices.Collect(maps.Keys(obj)))
	if !slices.Equal(got, want) {
		t.Errorf("result %s: properties %v, the binary writes %v", ystr(r, "name"), got, want)
	}
}

// checkCatalog holds a Task under task/ to the Tekton catalog's layout:
// task/<name>/<version>/<name>.yaml with a README and samples, and the
// catalog's labels and annotations.
func (s *yamlSuite) checkCatalog(t *testing.T, d *yamlDoc) {
	parts := strings.Split(d.file, "/")
	if len(parts) != 4 || parts[1] != d.name() || parts[3] != d.name()+".yaml" {
		t.Errorf("catalog layout wants task/%s/<version>/%s.yaml", d.name(), d.name())
		return
	}
	dir := filepath.Join(repoRoot, "task", parts[1], parts[2])
	if got := ystr(d.obj, "metadata", "labels", "app.kubernetes.io/version"); got != parts[2] {
		t.Errorf("label app.kubernetes.io/version %q, want %q (the folder)", got, parts[2])
	}
	for _, a := range []string{"tekton.dev/pipelines.minVersion", "tekton.dev/categories", "tekton.dev/tags", "tekton.dev/displayName", "tekton.dev/platforms"} {
		if ystr(d.obj, "metadata", "annotations", a) == "" {
			t.Errorf("no annotation %s", a)
		}
	}
	if ystr(d.obj, "spec", "description") == "" {
		t.Error("no spec.description")
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Errorf("no README: %v", err)
	}
	samples, _ := filepath.Glob(filepath.Join(dir, "samples", "*.yaml"))
	if len(samples) == 0 {
		t.Error("no samples/*.yaml")
	}
}

func (s *yamlSuite) checkPipeline(t *testing.T, d *yamlDoc) {
	spec := ymap(d.obj, "spec")
	refs := collectTektonRefs(t, spec)
	checkDeclaredUsed(t, "param", names(ylist(spec, "params")), refs.params)
	if len(refs.results) > 0 {
		t.Errorf("$(results...) in a Pipeline: %v", refs.results)
	}
	usedWorkspaces := map[string]bool{}
	tasks := map[string]*yamlDoc{}
	for _, pt := range append(ylist(spec, "tasks"), ylist(spec, "finally")...) {
		where := "task " + ystr(pt, "name")
		task := s.byKind["Task"][ystr(pt, "taskRef", "name")]
		if task == nil {
			t.Errorf("%s: taskRef %q is not a Task of this repository", where, ystr(pt, "taskRef", "name"))
			continue
		}
		tasks[ystr(pt, "name")] = task
		checkArguments(t, where, ylist(pt, "params"), ylist(task.obj, "spec", "params"), "default")
		checkWorkspaceBindings(t, where, ylist(pt, "workspaces"), ylist(task.obj, "spec", "workspaces"))
		for _, w := range ylist(pt, "workspaces") {
			usedWorkspaces[ystr(w, "workspace")] = true
		}
	}
	checkDeclaredUsed(t, "workspace", names(ylist(spec, "workspaces")), usedWorkspaces)
	for _, tr := range refs.taskResults {
		task := tasks[tr[0]]
		if task == nil {
			t.Errorf("$(tasks.%s.results.%s): no such pipeline task", tr[0], tr[1])
		} else if !slices.Contains(names(ylist(task.obj, "spec", "results")), tr[1]) {
			t.Errorf("$(tasks.%s.results.%s): Task %s declares no such result", tr[0], tr[1], task.name())
		}
	}
}

// checkArguments checks given parameters against the declared ones: every
// given one is declared, every one without a default is given.
func checkArguments(t *testing.T, where string, given, declared []any, defaultKey string) {
	givenNames, declaredNames := names(given), names(declared)
	for _, g := range givenNames {
		if !slices.Contains(declaredNames, g) {
			t.Errorf("%s: param %q is not declared by the callee", where, g)
		}
	}
	for _, p := range declared {
		if _, ok := ymap(p)[defaultKey]; !ok && !slices.Contains(givenNames, ystr(p, "name")) {
			t.Errorf("%s: required param %q is not given", where, ystr(p, "name"))
		}
	}
}

func checkWorkspaceBindings(t *testing.T, where string, given, declared []any) {
	givenNames, declaredNames := names(given), names(declared)
	for _, g := range givenNames {
		if !slices.Contains(declaredNames, g) {
			t.Errorf("%s: workspace %q is not declared by the callee", where, g)
		}
	}
	for _, w := range declared {
		if !ybool(w, "optional") && !slices.Contains(givenNames, ystr(w, "name")) {
			t.Errorf("%s: required workspace %q is not bound", where, ystr(w, "name"))
		}
	}
}

// runsSave reports whether a Task has a step that runs `etcd-backup save`.
func runsSave(task *yamlDoc) bool {
	return slices.ContainsFunc(ylist(task.obj, "spec", "steps"), func(s any) bool {
		return runsBinary(s) && ystr(s, "args", "0") == "save"
	})
}

func (s *yamlSuite) checkTaskRun(t *testing.T, d *yamlDoc) {
	spec := ymap(d.obj, "spec")
	task := s.byKind["Task"][ystr(spec, "taskRef", "name")]
	if task == nil {
		t.Fatalf("taskRef %q is not a Task of this repository", ystr(spec, "taskRef", "name"))
	}
	checkArguments(t, "spec", ylist(spec, "params"), ylist(task.obj, "spec", "params"), "default")
	checkWorkspaceBindings(t, "spec", ylist(spec, "workspaces"), ylist(task.obj, "spec", "workspaces"))
	checkImageParams(t, "spec.params", ylist(spec, "params"), "value")
	s.checkTaskRunTimeout(t, spec, task)
	if runsSave(task) {
		checkPlacement(t, "spec.podTemplate", ymap(spec, "podTemplate"), ybool(spec, "podTemplate", "hostNetwork"))
		checkServiceAccount(t, "spec", ystr(spec, "serviceAccountName"))
	}
}

func (s *yamlSuite) checkPipelineRun(t *testing.T, d *yamlDoc) {
	spec := ymap(d.obj, "spec")
	pipeline := s.byKind["Pipeline"][ystr(spec, "pipelineRef", "name")]
	if pipeline == nil {
		t.Fatalf("pipelineRef %q is not a Pipeline of this repository", ystr(spec, "pipelineRef", "name"))
	}
	checkArguments(t, "spec", ylist(spec, "params"), ylist(pipeline.obj, "spec", "params"), "default")
	checkWorkspaceBindings(t, "spec", ylist(spec, "workspaces"), ylist(pipeline.obj, "spec", "workspaces"))
	checkImageParams(t, "spec.params", ylist(spec, "params"), "value")
	s.checkPipelineRunTimeouts(t, spec, pipeline)
	for _, pt := range append(ylist(pipeline.obj, "spec", "tasks"), ylist(pipeline.obj, "spec", "finally")...) {
		task := s.byKind["Task"][ystr(pt, "taskRef", "name")]
		if task == nil || !runsSave(task) {
			continue
		}
		// Per pipeline task settings win over the template for all tasks.
		where, trs := "spec.taskRunTemplate", ymap(spec, "taskRunTemplate")
		for _, r := range ylist(spec, "taskRunSpecs") {
			if ystr(r, "pipelineTaskName") == ystr(pt, "name") {
				where, trs = "spec.taskRunSpecs "+ystr(pt, "name"), ymap(r)
			}
		}
		checkPlacement(t, where+".podTemplate", ymap(trs, "podTemplate"), ybool(trs, "podTemplate", "hostNetwork"))
		checkServiceAccount(t, where, ystr(trs, "serviceAccountName"))
	}
}

// checkPlacement wants a pod that runs save on a master: the master node
// selector, tolerations of both master taints, and the host network.
func checkPlacement(t *testing.T, where string, pod map[string]any, hostNetwork bool) {
	if v, ok := ymap(pod, "nodeSelector")["node-role.kubernetes.io/master"]; !ok || v != "" {
		t.Errorf(`%s: no nodeSelector node-role.kubernetes.io/master: ""`, where)
	}
	for _, taint := range masterTaints {
		if !slices.ContainsFunc(ylist(pod, "tolerations"), func(tol any) bool {
			return ystr(tol, "key") == taint && ystr(tol, "operator") == "Exists" && ystr(tol, "effect") == "NoSchedule"
		}) {
			t.Errorf("%s: no toleration {key: %s, operator: Exists, effect: NoSchedule}", where, taint)
		}
	}
	if !hostNetwork {
		t.Errorf("%s: not on the host network", where)
	}
}

func checkServiceAccount(t *testing.T, where, sa string) {
	if sa != backupServiceAccount {
		t.Errorf("%s: serviceAccountName %q, want %q (bound to the privileged SCC)", where, sa, backupServiceAccount)
	}
}

// argoRefs collects the {{...}} references in v, failing unknown ones.
func argoRefs(t *testing.T, v any) (inputs, workflow map[string]bool) {
	inputs, workflow = map[string]bool{}, map[string]bool{}
	walk(v, "", func(p string, v any) {
		str, _ := v.(string)
		for _, m := range argoRef.FindAllStringSubmatch(str, -1) {
			if sm := argoInputRef.FindStringSubmatch(m[1]); sm != nil {
				inputs[sm[1]] = true
			} else if sm := argoWorkflowRef.FindStringSubmatch(m[1]); sm != nil {
				workflow[sm[1]] = true
			} else {
				t.Errorf("%s: unknown variable {{%s}}", p, m[1])
			}
		}
	})
	return inputs, workflow
}

func (s *yamlSuite) checkWorkflowTemplate(t *testing.T, d *yamlDoc) {
	spec := ymap(d.obj, "spec")
	templates := map[string]any{}
	for _, tmpl := range ylist(spec, "templates") {
		templates[ystr(tmpl, "name")] = tmpl
	}
	entry, ok := templates[ystr(spec, "entrypoint")]
	if !ok {
		t.Errorf("entrypoint %q is no template", ystr(spec, "entrypoint"))
	}
	// Workflow arguments reach the entrypoint's inputs of the same name.
	usedWorkflow := map[string]bool{}
	for _, name := range names(ylist(entry, "inputs", "parameters")) {
		usedWorkflow[name] = true
	}
	for _, tmpl := range ylist(spec, "templates") {
		where := "template " + ystr(tmpl, "name")
		inputs, workflow := argoRefs(t, tmpl)
		maps.Copy(usedWorkflow, workflow)
		declared := ylist(tmpl, "inputs", "parameters")
		checkDeclaredUsed(t, where+": input", names(declared), inputs)
		checkImageParams(t, where+" inputs", declared, "value")
		for _, group := range ylist(tmpl, "steps") {
			for _, step := range ylist(group) {
				s.checkArgoCall(t, where+" step "+ystr(step, "name"), templates, step)
			}
		}
		s.checkArgoPod(t, where, spec, tmpl)
	}
	_, workflowDeclared := argoRefs(t, spec)
	maps.Copy(usedWorkflow, workflowDeclared)
	checkDeclaredUsed(t, "workflow parameter", names(ylist(spec, "arguments", "parameters")), usedWorkflow)
	checkImageParams(t, "spec.arguments", ylist(spec, "arguments", "parameters"), "value")
	s.checkWorkflowDeadline(t, spec)
}

// checkArgoCall checks a step's template or templateRef and its arguments.
func (s *yamlSuite) checkArgoCall(t *testing.T, where string, local map[string]any, step any) {
	var callee any
	if name := ystr(step, "template"); name != "" {
		callee = local[name]
	} else if ref := ymap(step, "templateRef"); ref != nil {
		if wft := s.byKind["WorkflowTemplate"][ystr(ref, "name")]; wft != nil {
			for _, tmpl := range ylist(wft.obj, "spec", "templates") {
				if ystr(tmpl, "name") == ystr(ref, "template") {
					callee = tmpl
				}
			}
		}
	}
	if callee == nil {
		t.Errorf("%s: calls no template of this repository", where)
		return
	}
	checkArguments(t, where, ylist(step, "arguments", "parameters"), ylist(callee, "inputs", "parameters"), "value")
}

// openShiftPipelinesCerts is where OpenShift Pipelines' webhook mounts the
// cluster's trusted CA bundle into a TaskRun's containers: the first
// directory their SSL_CERT_DIR names.
const openShiftPipelinesCerts = "/tekton-custom-certs"

// checkCertDirs wants each directory that SSL_CERT_DIR names in container
// c to be mounted there: a workspace's mountPath among mounts, one of c's
// volumeMounts, or, first in a Task, OpenShift Pipelines' own. Go skips a
// missing directory without a word, so a mistyped path would leave the CA
// bundle untrusted and say nothing.
func checkCertDirs(t *testing.T, where string, c any, mounts []string, task bool) {
	for _, m := range ylist(c, "volumeMounts") {
		mounts = append(mounts, ystr(m, "mountPath"))
	}
	for _, e := range ylist(c, "env") {
		if ystr(e, "name") != "SSL_CERT_DIR" {
			continue
		}
		dirs := strings.Split(ystr(e, "value"), ":")
		if task && dirs[0] != openShiftPipelinesCerts {
			// The webhook would mount the bundle in the first directory,
			// inside a workspace's read-only volume, and fail the pod.
			t.Errorf("%s: SSL_CERT_DIR starts with %s, want %s first", where, dirs[0], openShiftPipelinesCerts)
		}
		for i, dir := range dirs {
			if !slices.Contains(mounts, dir) && (!task || i > 0) {
				t.Errorf("%s: SSL_CERT_DIR names %s, where nothing is mounted", where, dir)
			}
		}
	}
}

// checkArgoPod checks the containers of a template, its outputs against
// the result files, and, for one that runs save, its placement.
func (s *yamlSuite) checkArgoPod(t *testing.T, where string, spec map[string]any, tmpl any) {
	containers := ylist(tmpl, "containerSet", "containers")
	if c := ymap(tmpl, "container"); c != nil {
		containers = append(containers, c)
	}
	written, resultsDirs, save := map[string]string{}, map[string]bool{}, false
	for _, c := range containers {
		cw := where + " container " + ystr(c, "name")
		checkImage(t, cw, ystr(c, "image"))
		if !runsBinary(c) {
			t.Errorf("%s: command is not [%s]", cw, binaryPath)
			continue
		}
		inv := checkInvocation(t, cw, c)
		checkCertDirs(t, cw, c, nil, false)
		save = save || inv.command == "save"
		if inv.resultsDir != "" {
			resultsDirs[inv.resultsDir] = true
			maps.Copy(written, s.results[inv.command])
		}
	}
	for _, out := range ylist(tmpl, "outputs", "parameters") {
		name, p := ystr(out, "name"), ystr(out, "valueFrom", "path")
		if _, ok := written[name]; !ok || !resultsDirs[path.Dir(p)] || path.Base(p) != name {
			t.Errorf("%s: output %s from %s is not a result file the binary writes", where, name, p)
		}
	}
	if !save {
		return
	}
	pod := ymap(tmpl)
	if ymap(tmpl, "nodeSelector") == nil {
		pod = spec
	}
	var patch struct {
		HostNetwork bool `json:"hostNetwork"`
	}
	if p := ystr(tmpl, "podSpecPatch"); p != "" {
		if err := json.Unmarshal([]byte(p), &patch); err != nil {
			t.Errorf("%s: podSpecPatch: %v", where, err)
		}
	}
	checkPlacement(t, where, pod, patch.HostNetwork || ybool(spec, "hostNetwork"))
	sa := ystr(tmpl, "serviceAccountName")
	if sa == "" {
		sa = ystr(spec, "serviceAccountName")
	}
	checkServiceAccount(t, where, sa)
}

func (s *yamlSuite) checkCronWorkflow(t *testing.T, d *yamlDoc) {
	spec := ymap(d.obj, "spec")
	if len(ylist(spec, "schedules")) == 0 {
		t.Error("no spec.schedules")
	}
	if ystr(spec, "concurrencyPolicy") != "Forbid" {
		t.Error("concurrencyPolicy is not Forbid: two backups could run at once")
	}
	if ystr(spec, "timezone") == "" {
		t.Error("no timezone: the schedule would follow the controller's")
	}
	ws := ymap(spec, "workflowSpec")
	wft := s.byKind["WorkflowTemplate"][ystr(ws, "workflowTemplateRef", "name")]
	if wft == nil {
		t.Fatalf("workflowTemplateRef %q is not a WorkflowTemplate of this repository", ystr(ws, "workflowTemplateRef", "name"))
	}
	checkArguments(t, "spec.workflowSpec", ylist(ws, "arguments", "parameters"), ylist(wft.obj, "spec", "arguments", "parameters"), "value")
	checkImageParams(t, "spec.workflowSpec.arguments", ylist(ws, "arguments", "parameters"), "value")
}

func (s *yamlSuite) checkCronJob(t *testing.T, d *yamlDoc) {
	pod := ymap(d.obj, "spec", "jobTemplate", "spec", "template", "spec")
	for _, c := range ylist(pod, "containers") {
		checkImage(t, "container "+ystr(c, "name"), ystr(c, "image"))
	}
	for _, v := range ylist(pod, "volumes") {
		if cm := ystr(v, "configMap", "name"); cm != "" && !s.generatedConfigMap(cm) {
			t.Errorf("volume %s: ConfigMap %s is generated by no kustomization", ystr(v, "name"), cm)
		}
	}
}

func (s *yamlSuite) generatedConfigMap(name string) bool {
	for _, d := range s.docs {
		if d.kind() == "Kustomization" && slices.Contains(names(ylist(d.obj, "configMapGenerator")), name) {
			return true
		}
	}
	return false
}

// checkKustomization wants every resource and generator file to exist, files
// inside the kustomization's folder (kustomize refuses others) and folders
// holding a kustomization.
func (s *yamlSuite) checkKustomization(t *testing.T, d *yamlDoc) {
	dir := path.Dir(d.file)
	check := func(entry string, fileOnly bool) {
		p := path.Join(dir, entry)
		fi, err := os.Stat(filepath.Join(repoRoot, p))
		switch {
		case err != nil:
			t.Errorf("%s: %v", entry, err)
		case fi.IsDir() && !fileOnly:
			if _, err := os.Stat(filepath.Join(repoRoot, p, "kustomization.yaml")); err != nil {
				t.Errorf("%s: a folder with no kustomization.yaml", entry)
			}
		case fi.IsDir():
			t.Errorf("%s: a folder, want a file", entry)
		case strings.HasPrefix(path.Clean(entry), ".."):
			t.Errorf("%s: a file outside %s; kustomize loads only files below the kustomization", entry, dir)
		}
	}
	for _, r := range ylist(d.obj, "resources") {
		check(r.(string), false)
	}
	for f := range s.generated {
		if path.Dir(f) == dir {
			check(path.Base(f), true)
		}
	}
}

// checkCoverage wants every YAML file to be installed by some
// kustomization, except samples and tests, which are run by hand.
func (s *yamlSuite) checkCoverage(t *testing.T) {
	included := maps.Clone(s.generated)
	for _, d := range s.docs {
		if d.kind() != "Kustomization" {
			continue
		}
		for _, r := range ylist(d.obj, "resources") {
			included[path.Join(path.Dir(d.file), r.(string))] = true
		}
	}
	for _, d := range s.docs {
		dir := "/" + path.Dir(d.file) + "/"
		if d.kind() == "Kustomization" || strings.Contains(dir, "/samples/") || strings.Contains(dir, "/tests/") {
			continue
		}
		if !included[d.file] {
			t.Errorf("%s is in no kustomization: `oc apply -k` would not install it", d.file)
		}
	}
}

// walk calls fn for every node of v with its path, like spec.steps[0].name.
func walk(v any, p string, fn func(path string, v any)) {
	fn(p, v)
	switch v := v.(type) {
	case map[string]any:
		for _, k := range sorted(slices.Collect(maps.Keys(v))) {
			walk(v[k], strings.TrimPrefix(p+"."+k, "."), fn)
		}
	case []any:
		for i, e := range v {
			walk(e, fmt.Sprintf("%s[%d]", p, i), fn)
		}
	}
}

// yget follows keys (a number indexes a list) and returns what is there.
func yget(v any, keys ...string) any {
	for _, k := range keys {
		switch c := v.(type) {
		case map[string]any:
			v = c[k]
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i < 0 || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

func ymap(v any, keys ...string) map[string]any {
	m, _ := yget(v, keys...).(map[string]any)
	return m
}

func ylist(v any, keys ...string) []any {
	l, _ := yget(v, keys...).([]any)
	return l
}

func ystr(v any, keys ...string) string {
	s, _ := yget(v, keys...).(string)
	return s
}

func ybool(v any, keys ...string) bool {
	b, _ := yget(v, keys...).(bool)
	return b
}

func ystrs(v any, keys ...string) []string {
	var out []string
	for _, e := range ylist(v, keys...) {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// names returns the name field of each element.
func names(list []any) []string {
	out := make([]string, 0, len(list))
	for _, e := range list {
		out = append(out, ystr(e, "name"))
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
