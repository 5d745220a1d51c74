package store

import (
	"strings"
	"testing"
	"time"
)

func TestGCSParseURL(t *testing.T) {
	tests := []struct {
		in      string
		want    URL
		wantErr string
	}{
		{in: "gs://backups", want: URL{Bucket: "backups"}},
		{in: "gs://backups/", want: URL{Bucket: "backups"}},
		{in: "gs://my-bucket_1/etcd/prod/", want: URL{Bucket: "my-bucket_1", Path: "etcd/prod"}},
		{in: "gs://backups.example.com/x", want: URL{Bucket: "backups.example.com", Path: "x"}},
		{in: "/mnt/backups", wantErr: "not a gs:// URL"},
		{in: "s3://backups/x", wantErr: "not a gs:// URL"},
		{in: "gs://", wantErr: "not a valid bucket name"},
		{in: "gs://ab", wantErr: "not a valid bucket name"},
		{in: "gs://Backups", wantErr: "not a valid bucket name"},
		{in: "gs://-backups", wantErr: "not a valid bucket name"},
		{in: "gs://" + strings.Repeat("a", 64), wantErr: "not a valid bucket name"},
		{in: "gs://" + strings.Repeat("a.", 110) + "ab", want: URL{Bucket: strings.Repeat("a.", 110) + "ab"}}, // 222 with dots
		{in: "gs://" + strings.Repeat("a.", 111) + "a", wantErr: "not a valid bucket name"},
		{in: "gs://backups//x", wantErr: "empty, '.' or '..'"},
		{in: "gs://backups/a/../b", wantErr: "empty, '.' or '..'"},
		{in: "gs://backups/./b", wantErr: "empty, '.' or '..'"},
	}
	for _, tt := range tests {
		got, err := ParseURL(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseURL(%q) = %+v, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestGCSURLJoin(t *testing.T) {
	tests := []struct {
		u         URL
		elem      []string
		want, dir string
	}{
		{URL{Bucket: "b"}, []string{"c", "ts"}, "gs://b/c/ts", "c/ts/"},
		{URL{Bucket: "b", Path: "p/q"}, []string{"c"}, "gs://b/p/q/c", "p/q/c/"},
		{URL{Bucket: "b"}, nil, "gs://b", ""},
	}
	for _, tt := range tests {
		got := tt.u.Join(tt.elem...)
		if got.String() != tt.want || got.Dir() != tt.dir {
			t.Errorf("%+v.Join(%q) = %s (dir %q), want %s (dir %q)", tt.u, tt.elem, got, got.Dir(), tt.want, tt.dir)
		}
	}
}

func TestGCSProtected(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		o    Object
		want string
	}{
		{Object{}, ""},
		{Object{RetainUntil: now.Add(-time.Second)}, ""},
		{Object{RetainUntil: now.Add(time.Hour)}, "retained until 2026-01-01T01:00:00Z"},
		{Object{Hold: true}, "under a hold"},
	}
	for _, tt := range tests {
		if got := tt.o.Protected(now); got != tt.want {
			t.Errorf("%+v.Protected = %q, want %q", tt.o, got, tt.want)
		}
	}
}
