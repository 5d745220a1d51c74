package openshift

import "testing"

func TestClusterVersion(t *testing.T) {
	tests := []struct {
		name      string
		json      string
		version   string
		upgrading bool
	}{
		{
			name:    "settled",
			json:    `{"spec":{"clusterID":"c1"},"status":{"history":[{"state":"Completed","version":"4.18.12"},{"state":"Completed","version":"4.18.10"}],"conditions":[{"type":"Progressing","status":"False"}]}}`,
			version: "4.18.12",
		},
		{
			name:      "mid-upgrade",
			json:      `{"status":{"history":[{"state":"Partial","version":"4.19.1"},{"state":"Completed","version":"4.18.12"}],"conditions":[{"type":"Progressing","status":"True","message":"Working towards 4.19.1"}]}}`,
			version:   "4.18.12",
			upgrading: true,
		},
		{
			name:      "progressing without history entry",
			json:      `{"status":{"history":[{"state":"Completed","version":"4.18.12"}],"conditions":[{"type":"Progressing","status":"True"}]}}`,
			version:   "4.18.12",
			upgrading: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cv, err := ParseClusterVersion([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if got := cv.Version(); got != tt.version {
				t.Errorf("Version() = %q, want %q", got, tt.version)
			}
			if got, why := cv.Upgrading(); got != tt.upgrading {
				t.Errorf("Upgrading() = %v (%s), want %v", got, why, tt.upgrading)
			}
			if got := cv.Completed(tt.version); got == tt.upgrading {
				t.Errorf("Completed(%q) = %v", tt.version, got)
			}
		})
	}
	if _, err := ParseClusterVersion([]byte("{")); err == nil {
		t.Error("ParseClusterVersion accepted broken JSON")
	}
}

func TestClusterOperatorProgressing(t *testing.T) {
	tests := []struct {
		json string
		want bool
	}{
		{`{"status":{"conditions":[{"type":"Progressing","status":"False"}]}}`, false},
		{`{"status":{"conditions":[{"type":"Progressing","status":"True"}]}}`, true},
		{`{"status":{"conditions":[{"type":"Progressing","status":"Unknown"}]}}`, true},
		{`{"status":{"conditions":[]}}`, true},
	}
	for _, tt := range tests {
		co, err := ParseClusterOperator([]byte(tt.json))
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := co.Progressing(); got != tt.want {
			t.Errorf("%s: Progressing() = %v, want %v", tt.json, got, tt.want)
		}
	}
}
