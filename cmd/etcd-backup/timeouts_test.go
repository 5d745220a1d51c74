package main

// The deadlines in the YAML nest: each step's own --timeout inside the
// TaskRun's or pod's time, every attempt of a retried task inside the
// PipelineRun's or Workflow's. An outer deadline shorter than the inner ones
// kills a run that would have succeeded, or fails a PipelineRun whose
// TaskRun is still retrying.

import (
	"cmp"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const (
	// podMargin is what an attempt needs besides its steps' deadlines: the
	// pod's scheduling, the image pull, results and the metrics push.
	podMargin = 15 * time.Minute
	// tektonDefaultTimeout is Tekton's default TaskRun and PipelineRun
	// timeout.
	tektonDefaultTimeout = time.Hour
)

// binaryTimeout is --timeout's default: a step that sets none has it.
func binaryTimeout(t *testing.T) time.Duration {
	fs := pflag.NewFlagSet("", pflag.ContinueOnError)
	addGlobals(fs)
	d, err := time.ParseDuration(fs.Lookup("timeout").DefValue)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// stepDeadline is how long a step or container that runs the binary may
// take: its --timeout, from ETCD_BACKUP_TIMEOUT, resolved by value. With
// --wait-for-version, the wait must fit inside it.
func stepDeadline(t *testing.T, where string, c any, value func(string) string) time.Duration {
	if !runsBinary(c) {
		return 0
	}
	env := map[string]string{}
	for _, e := range ylist(c, "env") {
		env[ystr(e, "name")] = value(ystr(e, "value"))
	}
	d := binaryTimeout(t)
	if v, ok := env[envPrefix+"TIMEOUT"]; ok {
		d = parseDuration(t, where+" "+envPrefix+"TIMEOUT", v)
	}
	if d == 0 {
		t.Errorf("%s: no deadline (--timeout 0)", where)
		return math.MaxInt64 / 4
	}
	if env[envPrefix+"WAIT_FOR_VERSION"] != "" {
		if wait := parseDuration(t, where+" "+envPrefix+"WAIT_TIMEOUT", env[envPrefix+"WAIT_TIMEOUT"]); wait >= d {
			t.Errorf("%s: the wait (%s) does not fit in the deadline (%s)", where, wait, d)
		}
	}
	return d
}

// ynum is the integer at keys, 0 when absent.
func ynum(t *testing.T, v any, keys ...string) int64 {
	n, ok := yget(v, keys...).(json.Number)
	if !ok {
		return 0
	}
	i, err := n.Int64()
	if err != nil {
		t.Errorf("%s: %v", strings.Join(keys, "."), err)
	}
	return i
}

func parseDuration(t *testing.T, what, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("%s: %q is no duration", what, s)
	}
	return d
}

// tektonValues returns the values a Task or Pipeline runs with: the
// declared defaults, then given (a TaskRun's, a pipeline task's or a
// PipelineRun's params), whose $(params.X) outer resolves.
func tektonValues(declared, given []any, outer map[string]string) map[string]string {
	v := map[string]string{}
	for _, d := range declared {
		if def, ok := ymap(d)["default"].(string); ok {
			v[ystr(d, "name")] = def
		}
	}
	for _, g := range given {
		v[ystr(g, "name")] = resolveTekton(ystr(g, "value"), outer)
	}
	return v
}

func resolveTekton(s string, params map[string]string) string {
	return tektonRef.ReplaceAllStringFunc(s, func(ref string) string {
		if m := tektonParamRef.FindStringSubmatch(tektonRef.FindStringSubmatch(ref)[1]); m != nil {
			return params[m[1]+m[2]]
		}
		return ref
	})
}

// taskAttempt is the time one attempt of task takes at most with params:
// its steps in turn, each to its deadline, and the pod's margin.
func taskAttempt(t *testing.T, task *yamlDoc, params map[string]string) time.Duration {
	d := podMargin
	for _, step := range ylist(task.obj, "spec", "steps") {
		d += stepDeadline(t, "Task "+task.name()+" step "+ystr(step, "name"), step, func(s string) string { return resolveTekton(s, params) })
	}
	return d
}

func tektonTimeout(t *testing.T, where, s string) time.Duration {
	if s == "" {
		return tektonDefaultTimeout
	}
	return parseDuration(t, where, s)
}

// checkTaskRunTimeout: the TaskRun's timeout covers its Task's steps.
func (s *yamlSuite) checkTaskRunTimeout(t *testing.T, spec map[string]any, task *yamlDoc) {
	need := taskAttempt(t, task, tektonValues(ylist(task.obj, "spec", "params"), ylist(spec, "params"), nil))
	if got := tektonTimeout(t, "spec.timeout", ystr(spec, "timeout")); got < need {
		t.Errorf("spec.timeout %s is shorter than the Task's steps may take, %s (their deadlines and %s for the pod)", got, need, podMargin)
	}
}

// checkPipelineRunTimeouts: each pipeline task's timeout covers its steps,
// and the PipelineRun's covers every attempt of every task, finally tasks
// included.
func (s *yamlSuite) checkPipelineRunTimeouts(t *testing.T, spec map[string]any, pipeline *yamlDoc) {
	params := tektonValues(ylist(pipeline.obj, "spec", "params"), ylist(spec, "params"), nil)
	var total time.Duration
	for _, pt := range append(ylist(pipeline.obj, "spec", "tasks"), ylist(pipeline.obj, "spec", "finally")...) {
		task := s.byKind["Task"][ystr(pt, "taskRef", "name")]
		if task == nil {
			continue
		}
		where := "pipeline task " + ystr(pt, "name")
		attempt := tektonTimeout(t, where+" timeout", ystr(pt, "timeout"))
		if need := taskAttempt(t, task, tektonValues(ylist(task.obj, "spec", "params"), ylist(pt, "params"), params)); attempt < need {
			t.Errorf("%s: timeout %s is shorter than its steps may take, %s", where, attempt, need)
		}
		total += attempt * time.Duration(ynum(t, pt, "retries")+1)
	}
	if got := tektonTimeout(t, "spec.timeouts.pipeline", ystr(spec, "timeouts", "pipeline")); got < total {
		t.Errorf("spec.timeouts.pipeline %s is shorter than every attempt of every task may take, %s", got, total)
	}
}

// argoFlow sizes Argo templates: a call's time is its template's, the
// steps of a group in parallel, a pod's containers in turn, retries with
// their backoff.
type argoFlow struct {
	t        *testing.T
	s        *yamlSuite
	local    map[string]any
	workflow map[string]string
}

// checkWorkflowDeadline: the workflow's activeDeadlineSeconds covers its
// entrypoint, every retry included, and its exit handler.
func (s *yamlSuite) checkWorkflowDeadline(t *testing.T, spec map[string]any) {
	f := &argoFlow{t: t, s: s, local: map[string]any{}, workflow: map[string]string{}}
	for _, tmpl := range ylist(spec, "templates") {
		f.local[ystr(tmpl, "name")] = tmpl
	}
	for _, p := range ylist(spec, "arguments", "parameters") {
		f.workflow[ystr(p, "name")] = ystr(p, "value")
	}
	need := f.template(f.local[ystr(spec, "entrypoint")], f.workflow)
	if exit := ystr(spec, "onExit"); exit != "" {
		need += f.template(f.local[exit], nil)
	}
	got := ynum(t, spec, "activeDeadlineSeconds")
	if time.Duration(got)*time.Second < need {
		t.Errorf("activeDeadlineSeconds %v is shorter than the workflow may take, %s (%v s)", got, need, need.Seconds())
	}
}

// template is the most time tmpl takes when called with args.
func (f *argoFlow) template(tmpl any, args map[string]string) time.Duration {
	inputs := map[string]string{}
	for _, p := range ylist(tmpl, "inputs", "parameters") {
		inputs[ystr(p, "name")] = ystr(p, "value")
		if v, ok := args[ystr(p, "name")]; ok {
			inputs[ystr(p, "name")] = v
		}
	}
	resolve := func(s string) string {
		return argoRef.ReplaceAllStringFunc(s, func(ref string) string {
			expr := argoRef.FindStringSubmatch(ref)[1]
			if m := argoInputRef.FindStringSubmatch(expr); m != nil {
				return inputs[m[1]]
			}
			if m := argoWorkflowRef.FindStringSubmatch(expr); m != nil {
				return f.workflow[m[1]]
			}
			return ref
		})
	}
	var d time.Duration
	for _, group := range ylist(tmpl, "steps") {
		var longest time.Duration
		for _, step := range ylist(group) {
			given := map[string]string{}
			for _, p := range ylist(step, "arguments", "parameters") {
				given[ystr(p, "name")] = resolve(ystr(p, "value"))
			}
			longest = max(longest, f.template(f.callee(step), given))
		}
		d += longest
	}
	containers := ylist(tmpl, "containerSet", "containers")
	if c := ymap(tmpl, "container"); c != nil {
		containers = append(containers, c)
	}
	if len(containers) == 0 {
		return d
	}
	attempt := podMargin
	for _, c := range containers {
		attempt += stepDeadline(f.t, "template "+ystr(tmpl, "name")+" container "+ystr(c, "name"), c, resolve)
	}
	return d + attempt + f.retries(tmpl, attempt)
}

// retries is the time a template's retries add: each attempt again, and
// the backoff before it.
func (f *argoFlow) retries(tmpl any, attempt time.Duration) time.Duration {
	rs := ymap(tmpl, "retryStrategy")
	if rs == nil {
		return 0
	}
	limit, err := strconv.Atoi(cmp.Or(ystr(rs, "limit"), "0"))
	if err != nil {
		f.t.Errorf("retryStrategy.limit %q is no number", ystr(rs, "limit"))
	}
	backoff := parseDuration(f.t, "retryStrategy.backoff.duration", cmp.Or(ystr(rs, "backoff", "duration"), "0s"))
	factor, err := strconv.ParseFloat(cmp.Or(ystr(rs, "backoff", "factor"), "1"), 64)
	if err != nil {
		f.t.Errorf("retryStrategy.backoff.factor %q is no number", ystr(rs, "backoff", "factor"))
	}
	var d time.Duration
	for range limit {
		d += attempt + backoff
		backoff = time.Duration(float64(backoff) * factor)
	}
	return d
}

func (f *argoFlow) callee(step any) any {
	if name := ystr(step, "template"); name != "" {
		return f.local[name]
	}
	ref := ymap(step, "templateRef")
	if wft := f.s.byKind["WorkflowTemplate"][ystr(ref, "name")]; wft != nil {
		for _, tmpl := range ylist(wft.obj, "spec", "templates") {
			if ystr(tmpl, "name") == ystr(ref, "template") {
				return tmpl
			}
		}
	}
	return nil
}
