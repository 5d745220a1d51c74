package preflight

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/member"
	"github.com/etcd-backup/etcd-backup/internal/openshift"
	"github.com/etcd-backup/etcd-backup/internal/staticpod"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func mustCV(t *testing.T, js string) *openshift.ClusterVersion {
	t.Helper()
	cv, err := openshift.ParseClusterVersion([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return cv
}

func operators(t *testing.T, progressing string) map[string]*openshift.ClusterOperator {
	ops := map[string]*openshift.ClusterOperator{}
	for _, name := range staticpod.Components {
		status := "False"
		if name == progressing {
			status = "True"
		}
		co, err := openshift.ParseClusterOperator([]byte(`{"status":{"conditions":[{"type":"Progressing","status":"` + status + `"}]}}`))
		if err != nil {
			t.Fatal(err)
		}
		ops[name] = co
	}
	return ops
}

const settledCV = `{"metadata":{"creationTimestamp":"2026-11-01T00:00:00Z"},"status":{"history":[{"state":"Completed","version":"4.18.12"}],"conditions":[{"type":"Progressing","status":"False"}]}}`

func healthy(t *testing.T) Facts {
	return Facts{
		Member:         member.Status{Name: "master-0", DBSize: 100 << 20},
		ClusterVersion: mustCV(t, settledCV),
		Operators:      operators(t, ""),
		Revisions:      []staticpod.Revision{{Component: "etcd", Revision: 3, Dir: "static-pod-resources/etcd-pod-3"}},
		FreeBytes:      1 << 40,
		Now:            now,
	}
}

func TestRun(t *testing.T) {
	opts := Options{MinClusterAge: 24 * time.Hour}
	tests := []struct {
		name    string
		mutate  func(*Facts)
		failed  string // the check expected to fail, "" for none
		skipped []string
	}{
		{name: "healthy"},
		// gatherFacts reads nothing more from a member that did not answer.
		{name: "member unreachable", mutate: func(f *Facts) {
			f.MemberErr, f.ClusterVersion, f.Operators = errors.New("connection refused"), nil, nil
		}, failed: MemberHealth, skipped: []string{ClusterOperators, ClusterVersion, ClusterAge, FreeSpace}},
		{name: "ClusterVersion unreadable", mutate: func(f *Facts) {
			f.ClusterVersionErr, f.ClusterVersion, f.Operators = errors.New("invalid character"), nil, nil
		}, failed: ClusterVersion, skipped: []string{ClusterOperators, ClusterAge}},
		{name: "learner", mutate: func(f *Facts) { f.Member.IsLearner = true }, failed: MemberHealth},
		{name: "alarm", mutate: func(f *Facts) { f.Alarms = []string{"NOSPACE"} }, failed: MemberHealth},
		{name: "no quorum for alarms", mutate: func(f *Facts) { f.AlarmsErr = errors.New("context deadline exceeded") }, failed: MemberHealth},
		{name: "revision dir missing", mutate: func(f *Facts) { f.RevisionsErr = errors.New("no such dir") }, failed: StaticPods},
		{name: "operator progressing", mutate: func(f *Facts) { f.Operators = operators(t, "kube-apiserver") }, failed: ClusterOperators},
		{name: "operator missing", mutate: func(f *Facts) { delete(f.Operators, "etcd") }, failed: ClusterOperators},
		{name: "mid-upgrade", mutate: func(f *Facts) {
			f.ClusterVersion = mustCV(t, `{"metadata":{"creationTimestamp":"2026-11-01T00:00:00Z"},"status":{"history":[{"state":"Partial","version":"4.19.0"}]}}`)
		}, failed: ClusterVersion},
		{name: "young cluster", mutate: func(f *Facts) { f.Now = f.ClusterVersion.Metadata.CreationTimestamp.Add(time.Hour) }, failed: ClusterAge},
		{name: "no space", mutate: func(f *Facts) { f.FreeBytes = 100 << 20 }, failed: FreeSpace},
		{name: "plain kubernetes", mutate: func(f *Facts) {
			f.ClusterVersion, f.Operators, f.Revisions = nil, nil, nil
		}, skipped: []string{StaticPods, ClusterOperators, ClusterVersion, ClusterAge}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := healthy(t)
			if tt.mutate != nil {
				tt.mutate(&f)
			}
			r := Run(f, opts)
			switch {
			case tt.failed == "" && r.Err() != nil:
				t.Fatalf("unexpected failure: %v", r.Err())
			case tt.failed != "" && (len(r.Failed) != 1 || !strings.Contains(r.Err().Error(), "preflight "+tt.failed+":")):
				t.Fatalf("want exactly %s to fail, got %v", tt.failed, r.Failed)
			}
			if r.Err() != nil && strings.Contains(r.Err().Error(), "\n") {
				t.Errorf("error is not one line: %q", r.Err())
			}
			var skipped []string
			for _, s := range r.Skipped {
				skipped = append(skipped, s.Name)
			}
			for _, sk := range r.Skipped {
				if (f.MemberErr != nil || f.ClusterVersionErr != nil) && strings.Contains(sk.Reason, "not an OpenShift") {
					t.Errorf("%s skipped as %q though the ClusterVersion was never read", sk.Name, sk.Reason)
				}
			}
			if !slices.Equal(skipped, tt.skipped) {
				t.Errorf("skipped %v, want %v", skipped, tt.skipped)
			}
			if n := len(r.Passed) + len(r.Skipped) + len(r.Failed); n != len(checks) {
				t.Errorf("%d outcomes for %d checks", n, len(checks))
			}
		})
	}
}

func TestSkip(t *testing.T) {
	s := Skip("--force")
	if len(s) != len(checks) || s[0].Reason != "--force" {
		t.Errorf("Skip = %v", s)
	}
}

func TestNeed(t *testing.T) {
	if got := Need(0); got != freeSpaceFloor {
		t.Errorf("Need(0) = %d", got)
	}
	if got := Need(10 << 30); got != 11<<30 {
		t.Errorf("Need(10 GiB) = %d", got)
	}
}
