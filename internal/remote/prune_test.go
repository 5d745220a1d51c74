package remote_test

import (
	"bytes"
	"context"
	"iter"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
)

var now = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) time.Time { return now.Add(-d) }

const day = 24 * time.Hour

func TestGCSListCompleteness(t *testing.T) {
	srv := gcstest.New(t, bucket)
	complete := craft(t, srv, crafted{prefix: "etcd", cluster: "a", at: ago(2 * day)})
	// Newer, but its upload never finished.
	craft(t, srv, crafted{prefix: "etcd", cluster: "a", at: ago(day), noManifest: true})
	// backup.json there, snapshot gone.
	broken := crafted{prefix: "etcd", cluster: "a", at: ago(3 * day)}
	bm := craft(t, srv, broken)
	if err := srv.Backend().DeleteObject(bucket, "etcd/a/"+bm.Timestamp+"/"+bm.File(manifest.KindSnapshot).Name); err != nil {
		t.Fatal(err)
	}
	// Not backups: wrong depth, bad timestamp, elsewhere.
	for _, name := range []string{"etcd/a/README", "etcd/a/latest/backup.json", "etcd/x/2026-01-01_000000/sub/file", "other/a/2026-01-01_000000/backup.json"} {
		put(srv, bucket, name, []byte("x"), nil, now)
	}
	c := client(t, srv.Host())
	backups, err := c.List(t.Context(), mustURL(t, "gs://"+bucket+"/etcd"))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ts      string
		state   remote.State
		problem string
	}
	var got []row
	for _, b := range backups {
		got = append(got, row{b.Ref.Timestamp, b.State, b.Problem})
	}
	want := []row{
		{ago(day).Format(manifest.TimestampLayout), remote.Incomplete, "no backup.json: upload interrupted or in progress"},
		{complete.Timestamp, remote.Complete, ""},
		{bm.Timestamp, remote.Incomplete, bm.File(manifest.KindSnapshot).Name + " is missing"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("List:\n got %v\nwant %v", got, want)
	}
	if backups[1].Manifest.Cluster.Version != "4.18.12" || backups[1].Manifest.Etcd.Revision != 42 {
		t.Errorf("complete backup's manifest = %+v", backups[1].Manifest)
	}

	latest, err := newest(t.Context(), c, mustURL(t, "gs://"+bucket+"/etcd"), "")
	if err != nil || latest.Timestamp != complete.Timestamp {
		t.Errorf("Latest = %v, %v; want the complete backup %s, not the newer incomplete one", latest, err, complete.Timestamp)
	}
}

func TestGCSLatestClusters(t *testing.T) {
	srv := gcstest.New(t, bucket)
	craft(t, srv, crafted{prefix: "p", cluster: "a", at: ago(day)})
	b := craft(t, srv, crafted{prefix: "p", cluster: "b", at: ago(2 * day)})
	c := client(t, srv.Host())
	dest := mustURL(t, "gs://"+bucket+"/p")
	if _, err := newest(t.Context(), c, dest, ""); exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "--cluster-id") {
		t.Errorf("Latest of two clusters: %v, want a usage error naming --cluster-id", err)
	}
	got, err := newest(t.Context(), c, dest, "b")
	if err != nil || got.Timestamp != b.Timestamp {
		t.Errorf("Latest(b) = %v, %v", got, err)
	}
	if _, err := newest(t.Context(), c, dest, "c"); err == nil {
		t.Error("Latest of an unknown cluster succeeded")
	}
}

func TestGCSPolicyCheck(t *testing.T) {
	for _, p := range []destination.Policy{{}, {KeepLast: -1}, {KeepWithin: -time.Hour}} {
		if err := p.Check(); exitcode.Of(err) != exitcode.Usage {
			t.Errorf("%+v: %v, want a usage error", p, err)
		}
	}
}

// prunable is a backup crafted for prune tests, with the outcome expected.
type prunable struct {
	crafted
	want destination.Action
}

func TestGCSPrune(t *testing.T) {
	tests := []struct {
		name    string
		policy  destination.Policy
		backups []prunable
	}{
		{
			name:   "keep last",
			policy: destination.Policy{KeepLast: 2},
			backups: []prunable{
				{crafted{at: ago(1 * day)}, destination.Keep},
				{crafted{at: ago(2 * day)}, destination.Keep},
				{crafted{at: ago(3 * day)}, destination.Remove},
				{crafted{at: ago(4 * day)}, destination.Remove},
			},
		},
		{
			name:   "keep within",
			policy: destination.Policy{KeepWithin: 36 * time.Hour},
			backups: []prunable{
				{crafted{at: ago(time.Hour)}, destination.Keep},
				{crafted{at: ago(30 * time.Hour)}, destination.Keep},
				{crafted{at: ago(50 * time.Hour)}, destination.Remove},
			},
		},
		{
			name:   "either rule keeps",
			policy: destination.Policy{KeepLast: 1, KeepWithin: 36 * time.Hour},
			backups: []prunable{
				{crafted{at: ago(time.Hour)}, destination.Keep},
				{crafted{at: ago(30 * time.Hour)}, destination.Keep},
				{crafted{at: ago(50 * time.Hour)}, destination.Remove},
			},
		},
		{
			name:   "newest complete is never removed",
			policy: destination.Policy{KeepWithin: time.Hour},
			backups: []prunable{
				{crafted{at: ago(5 * day)}, destination.Keep},
				{crafted{at: ago(6 * day)}, destination.Remove},
			},
		},
		{
			name:   "an incomplete backup is not the newest",
			policy: destination.Policy{KeepLast: 1},
			backups: []prunable{
				{crafted{at: ago(time.Hour), noManifest: true}, destination.Keep},
				{crafted{at: ago(2 * day)}, destination.Keep},
				{crafted{at: ago(3 * day)}, destination.Remove},
			},
		},
		{
			name:   "leftovers older than a day go",
			policy: destination.Policy{KeepLast: 1},
			backups: []prunable{
				{crafted{at: ago(1 * day)}, destination.Keep},
				{crafted{at: ago(3 * day), noManifest: true}, destination.Remove},
				// Saved long ago, uploaded just now: the upload may be running.
				{crafted{at: ago(4 * day), noManifest: true, created: ago(time.Hour)}, destination.Keep},
				{crafted{at: ago(5 * day), noManifest: true, foreignData: true}, destination.Keep},
			},
		},
		{
			name:   "other writers are left alone",
			policy: destination.Policy{KeepLast: 1},
			backups: []prunable{
				{crafted{at: ago(1 * day)}, destination.Keep},
				{crafted{at: ago(2 * day), tool: "cluster-backup.sh"}, destination.Keep},
				// Data objects another tool wrote: corrupt, so kept.
				{crafted{at: ago(3 * day), foreignData: true}, destination.Keep},
				{crafted{at: ago(4 * day)}, destination.Remove},
			},
		},
		{
			name:   "per cluster",
			policy: destination.Policy{KeepLast: 1},
			backups: []prunable{
				{crafted{at: ago(1 * day), cluster: "a"}, destination.Keep},
				{crafted{at: ago(2 * day), cluster: "a"}, destination.Remove},
				{crafted{at: ago(3 * day), cluster: "b"}, destination.Keep},
				{crafted{at: ago(4 * day), cluster: "b"}, destination.Remove},
			},
		},
		{
			name:   "archive in another bucket",
			policy: destination.Policy{KeepLast: 1},
			backups: []prunable{
				{crafted{at: ago(1 * day), resourcesTo: "keys"}, destination.Keep},
				{crafted{at: ago(2 * day), resourcesTo: "keys"}, destination.Remove},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dryRun := range []bool{true, false} {
				srv := gcstest.New(t, bucket, otherBucket)
				foreign := "etcd/x/" + ago(4*day).Format(manifest.TimestampLayout) + "/notes.txt"
				put(srv, bucket, foreign, []byte("mine"), nil, ago(10*day))
				objectsOf := map[remote.Ref][]string{}
				for _, b := range tt.backups {
					b.prefix = "etcd"
					if b.cluster == "" {
						b.cluster = "x"
					}
					craft(t, srv, b.crafted)
					objectsOf[b.ref(t)] = objectsBelow(t, srv, b.ref(t))
				}
				foreignRef := crafted{prefix: "etcd", cluster: "x", at: ago(4 * day)}.ref(t)
				objectsOf[foreignRef] = objectsBelow(t, srv, foreignRef)
				c := client(t, srv.Host())
				c.Now = func() time.Time { return now }
				decisions, err := c.Prune(t.Context(), mustURL(t, "gs://"+bucket+"/etcd"), remote.PruneOptions{Policy: tt.policy, DryRun: dryRun})
				if err != nil {
					t.Fatal(err)
				}
				want := map[remote.Ref]destination.Action{}
				for _, b := range tt.backups {
					b.prefix = "etcd"
					if b.cluster == "" {
						b.cluster = "x"
					}
					want[b.ref(t)] = b.want
				}
				for _, d := range decisions {
					// The foreign object alone is no backup of ours: kept.
					w, ok := want[d.Backup.Ref]
					if !ok {
						w = destination.Keep
					}
					delete(want, d.Backup.Ref)
					if d.Action != w {
						t.Errorf("dry run %v: %s: %s (%s), want %s", dryRun, d.Backup.Ref, d.Action, d.Reason, w)
					}
					left := objectsBelow(t, srv, d.Backup.Ref)
					if d.Action == destination.Remove && !dryRun {
						for _, name := range left {
							if written(t, srv, name) {
								t.Errorf("%s kept after removal", name)
							}
						}
					} else if !slices.Equal(left, objectsOf[d.Backup.Ref]) {
						t.Errorf("dry run %v: %s %s, but its objects went from %v to %v", dryRun, d.Action, d.Backup.Ref, objectsOf[d.Backup.Ref], left)
					}
				}
				if len(want) > 0 {
					t.Errorf("no decision on %v", want)
				}
				if !exists(srv, bucket, foreign) {
					t.Error("foreign object removed")
				}
			}
		})
	}
}

func TestGCSPruneProtected(t *testing.T) {
	old := crafted{prefix: "etcd", cluster: "x", at: ago(3 * day)}
	tests := []struct {
		name   string
		setup  func(t *testing.T, srv *gcstest.Server, p *gcstest.Proxy, dir string, b *manifest.Backup)
		want   destination.Action
		reason string
		left   []string // of the old backup's files, those expected to remain
	}{
		{
			name: "retention",
			setup: func(t *testing.T, srv *gcstest.Server, p *gcstest.Proxy, dir string, b *manifest.Backup) {
				obj, err := srv.GetObject(bucket, dir+b.File(manifest.KindSnapshot).Name)
				if err != nil {
					t.Fatal(err)
				}
				obj.Retention = &storage.ObjectRetention{Mode: "Locked", RetainUntil: now.Add(time.Hour)}
				srv.CreateObject(fakestorage.Object{ObjectAttrs: obj.ObjectAttrs, Content: obj.Content})
			},
			want: destination.Skip, reason: "retained until", left: []string{"snapshot", "resources", "backup.json"},
		},
		{
			name: "hold",
			setup: func(t *testing.T, srv *gcstest.Server, p *gcstest.Proxy, dir string, b *manifest.Backup) {
				p.RewriteObjects(func(obj map[string]any) {
					if obj["name"] == dir+b.File(manifest.KindResources).Name {
						obj["eventBasedHold"] = true
					}
				})
			},
			want: destination.Skip, reason: "under a hold", left: []string{"snapshot", "resources", "backup.json"},
		},
		{
			name: "delete of backup.json refused",
			setup: func(t *testing.T, srv *gcstest.Server, p *gcstest.Proxy, dir string, b *manifest.Backup) {
				p.Add(gcstest.Fault{Match: gcstest.IsDelete(dir + manifest.FileName), Do: gcstest.Status(http.StatusForbidden)})
			},
			want: destination.Skip, reason: "was refused", left: []string{"snapshot", "resources", "backup.json"},
		},
		{
			name: "delete of the snapshot refused",
			setup: func(t *testing.T, srv *gcstest.Server, p *gcstest.Proxy, dir string, b *manifest.Backup) {
				p.Add(gcstest.Fault{Match: gcstest.IsDelete(dir + b.File(manifest.KindSnapshot).Name), Do: gcstest.Status(http.StatusForbidden)})
			},
			want: destination.Remove, reason: "left as an incomplete backup", left: []string{"snapshot"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			proxy := gcstest.NewProxy(t, srv)
			craft(t, srv, crafted{prefix: "etcd", cluster: "x", at: ago(day)})
			b := craft(t, srv, old)
			dir := "etcd/x/" + b.Timestamp + "/"
			tt.setup(t, srv, proxy, dir, b)
			c := client(t, proxy.Host())
			c.Now = func() time.Time { return now }
			decisions, err := c.Prune(t.Context(), mustURL(t, "gs://"+bucket+"/etcd"), remote.PruneOptions{Policy: destination.Policy{KeepLast: 1}})
			if err != nil {
				t.Fatal(err)
			}
			d := decisions[1]
			if d.Action != tt.want || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("%s: %s, want %s %q", d.Action, d.Reason, tt.want, tt.reason)
			}
			names := map[string]string{
				"snapshot":    dir + b.File(manifest.KindSnapshot).Name,
				"resources":   dir + b.File(manifest.KindResources).Name,
				"backup.json": dir + manifest.FileName,
			}
			for what, name := range names {
				if want := slices.Contains(tt.left, what); exists(srv, bucket, name) != want {
					t.Errorf("%s exists = %v, want %v", what, !want, want)
				}
			}
		})
	}
}

func TestGCSPruneDeletesManifestFirst(t *testing.T) {
	srv := gcstest.New(t, bucket)
	proxy := gcstest.NewProxy(t, srv)
	craft(t, srv, crafted{prefix: "etcd", cluster: "x", at: ago(day)})
	b := craft(t, srv, crafted{prefix: "etcd", cluster: "x", at: ago(2 * day)})
	c := client(t, proxy.Host())
	c.Now = func() time.Time { return now }
	if _, err := c.Prune(t.Context(), mustURL(t, "gs://"+bucket+"/etcd"), remote.PruneOptions{Policy: destination.Policy{KeepLast: 1}}); err != nil {
		t.Fatal(err)
	}
	var deletes []string
	for _, r := range proxy.Requests() {
		if strings.HasPrefix(r, http.MethodDelete) {
			deletes = append(deletes, r[strings.LastIndex(r, "/")+1:])
		}
	}
	if len(deletes) != 3 || deletes[0] != manifest.FileName {
		t.Errorf("deleted %v; want %s first, then the %s files", deletes, manifest.FileName, b.Timestamp)
	}
}

func TestGCSPruneOneCluster(t *testing.T) {
	srv := gcstest.New(t, bucket)
	for _, cl := range []string{"a", "b"} {
		craft(t, srv, crafted{prefix: "etcd", cluster: cl, at: ago(day)})
		craft(t, srv, crafted{prefix: "etcd", cluster: cl, at: ago(2 * day)})
	}
	c := client(t, srv.Host())
	c.Now = func() time.Time { return now }
	decisions, err := c.Prune(t.Context(), mustURL(t, "gs://"+bucket+"/etcd"), remote.PruneOptions{Policy: destination.Policy{KeepLast: 1}, ClusterID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range decisions {
		if d.Backup.Ref.ClusterID != "b" {
			t.Errorf("decided on %s", d.Backup.Ref)
		}
	}
	if n := len(objects(t, srv, bucket)); n != 9 {
		t.Errorf("%d objects left, want 9 (cluster a untouched, one backup of b removed)", n)
	}
}

func objectsBelow(t *testing.T, srv *gcstest.Server, ref remote.Ref) []string {
	t.Helper()
	var out []string
	for _, bkt := range []string{bucket, otherBucket} {
		for _, name := range objects(t, srv, bkt) {
			if strings.Contains(name, "/"+ref.ClusterID+"/"+ref.Timestamp+"/") {
				out = append(out, bkt+"/"+name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// written says whether bucket/name was written by upload, going by its metadata.
func written(t *testing.T, srv *gcstest.Server, bucketName string) bool {
	t.Helper()
	bkt, name, _ := strings.Cut(bucketName, "/")
	obj, err := srv.GetObject(bkt, name)
	if err != nil {
		t.Fatal(err)
	}
	return obj.Metadata[remote.MetaWrittenBy] != ""
}

// TestGCSCorruptNewest overwrites the newest backup's snapshot with other
// bytes of the same size: it lists as corrupt, retention counts the older
// good backup as the newest and keeps both, and Newest takes the good one,
// saying which it skipped, and counts the corrupt one.
func TestGCSCorruptNewest(t *testing.T) {
	srv := gcstest.New(t, bucket)
	good := craft(t, srv, crafted{prefix: "etcd", cluster: "x", at: ago(2 * day)})
	older := craft(t, srv, crafted{prefix: "etcd", cluster: "x", at: ago(3 * day)})
	bad := craft(t, srv, crafted{prefix: "etcd", cluster: "x", at: ago(day)})
	name := "etcd/x/" + bad.Timestamp + "/" + bad.File(manifest.KindSnapshot).Name
	obj, err := srv.GetObject(bucket, name)
	if err != nil {
		t.Fatal(err)
	}
	obj.Content = bytes.Repeat([]byte("z"), len(obj.Content))
	obj.Crc32c, obj.Md5Hash = "", ""
	srv.CreateObject(obj)

	var log bytes.Buffer
	c := client(t, srv.Host())
	c.Log = slog.New(slog.NewTextHandler(&log, nil))
	c.Now = func() time.Time { return now }
	dest := mustURL(t, "gs://"+bucket+"/etcd")
	backups, err := c.List(t.Context(), dest)
	if err != nil {
		t.Fatal(err)
	}
	if b := backups[0]; b.Ref.Timestamp != bad.Timestamp || b.State != remote.Corrupt || !strings.Contains(b.Problem, "CRC32C") {
		t.Errorf("newest backup %s: %s (%s), want corrupt for its CRC32C", b.Ref, b.State, b.Problem)
	}
	found, err := destination.Newest(t.Context(), destOf(c, dest, remote.UploadOptions{}), "", c.Log)
	if err != nil {
		t.Fatal(err)
	}
	if latest := found.Complete[0]; latest.Timestamp != good.Timestamp {
		t.Errorf("Newest = %s, want %s", latest.Timestamp, good.Timestamp)
	}
	if len(found.Corrupt) != 1 || found.Corrupt[0].Timestamp != bad.Timestamp {
		t.Errorf("Newest found %d corrupt, want %s alone", len(found.Corrupt), bad.Timestamp)
	}
	if !strings.Contains(log.String(), "skipping gs://"+bucket+"/etcd/x/"+bad.Timestamp+", which is corrupt") {
		t.Errorf("Newest does not say it skipped %s:\n%s", bad.Timestamp, log.String())
	}
	decisions, err := c.Prune(t.Context(), dest, remote.PruneOptions{Policy: destination.Policy{KeepLast: 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]destination.Action{bad.Timestamp: destination.Keep, good.Timestamp: destination.Keep, older.Timestamp: destination.Remove}
	for _, d := range decisions {
		if d.Action != want[d.Backup.Ref.Timestamp] {
			t.Errorf("prune %s: %s (%s), want %s", d.Backup.Ref, d.Action, d.Reason, want[d.Backup.Ref.Timestamp])
		}
	}
	if !exists(srv, bucket, "etcd/x/"+good.Timestamp+"/"+manifest.FileName) {
		t.Error("prune deleted the newest good backup")
	}
}

// TestGCSNearby checks what List's caller is told where a prefix holds no
// backups: what is stored there instead.
func TestGCSNearby(t *testing.T) {
	srv := gcstest.New(t, bucket)
	b := craft(t, srv, crafted{prefix: "deep/etcd", cluster: "abc", at: ago(day)})
	put(srv, bucket, "misc/notes.txt", []byte("x"), nil, now)
	c := client(t, srv.Host())
	tests := []struct{ dest, want string }{
		{"gs://" + bucket + "/deep/etcd/abc", "gs://" + bucket + "/deep/etcd/abc holds the backups of one cluster, abc: give the prefix above it, gs://" + bucket + "/deep/etcd"},
		{"gs://" + bucket + "/deep", "there are backups further down: give the prefix gs://" + bucket + "/deep/etcd"},
		{"gs://" + bucket, "there are backups further down: give the prefix gs://" + bucket + "/deep/etcd"},
		{"gs://" + bucket + "/misc", "the objects below gs://" + bucket + "/misc are not backups"},
		{"gs://" + bucket + "/empty", "nothing is stored below gs://" + bucket + "/empty"},
	}
	for _, tt := range tests {
		got, err := c.Nearby(t.Context(), mustURL(t, tt.dest))
		if err != nil || !strings.Contains(got, tt.want) {
			t.Errorf("Nearby(%s) = %q, %v; want %q", tt.dest, got, err, tt.want)
		}
	}
	if backups, err := c.List(t.Context(), mustURL(t, "gs://"+bucket+"/deep/etcd")); err != nil || len(backups) != 1 || backups[0].Ref.Timestamp != b.Timestamp {
		t.Errorf("List of the right prefix = %v, %v", backups, err)
	}
	if _, err := newest(t.Context(), c, mustURL(t, "gs://"+bucket+"/deep"), ""); err == nil || !strings.Contains(err.Error(), "give the prefix gs://"+bucket+"/deep/etcd") {
		t.Errorf("Latest of a prefix too shallow: %v, want the right prefix suggested", err)
	}
}

// TestGCSPruneLeftoverCommitted runs the upload of a day-old leftover
// again while prune runs: it writes backup.json once prune has listed the
// leftover. Prune leaves the backup that is now complete whole.
func TestGCSPruneLeftoverCommitted(t *testing.T) {
	srv := gcstest.New(t, bucket)
	cr := crafted{prefix: "etcd", cluster: "x", at: ago(2 * day)}
	craft(t, srv, cr)
	name := cr.ref(t).URL().Join(manifest.FileName).Path
	committed, err := srv.GetObject(bucket, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Backend().DeleteObject(bucket, name); err != nil {
		t.Fatal(err)
	}
	c := client(t, srv.Host())
	c.Now = func() time.Time { return now }
	inner, done := c.Bucket, false
	c.Bucket = func(n string) remote.Store {
		return afterList{Store: inner(n), hook: func() {
			if !done {
				done = true
				srv.CreateObject(committed)
			}
		}}
	}
	dest := mustURL(t, "gs://"+bucket+"/etcd")
	decisions, err := c.Prune(t.Context(), dest, remote.PruneOptions{Policy: destination.Policy{KeepLast: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(decisions) != 1 || decisions[0].Action == destination.Remove {
		t.Errorf("decisions %+v: want the backup left alone", decisions)
	}
	backups, err := c.List(t.Context(), dest)
	if err != nil {
		t.Fatal(err)
	}
	if len(backups) != 1 || backups[0].State != remote.Complete {
		t.Errorf("after prune: %d backups, first %+v; want one complete; objects %v", len(backups), backups, objects(t, srv, bucket))
	}
}

// afterList runs hook once a listing has been read to its end.
type afterList struct {
	remote.Store
	hook func()
}

func (s afterList) List(ctx context.Context, prefix string) iter.Seq2[*store.Object, error] {
	return func(yield func(*store.Object, error) bool) {
		for obj, err := range s.Store.List(ctx, prefix) {
			if !yield(obj, err) {
				return
			}
		}
		s.hook()
	}
}
