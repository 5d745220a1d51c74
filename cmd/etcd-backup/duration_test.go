package main

import (
	"strings"
	"testing"
	"time"
)

// TestLongDuration: retention and ages take Go durations and whole days
// ahead of them; anything else is refused with the forms it takes.
func TestLongDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"720h", 720 * time.Hour, true},
		{"30d", 30 * day, true},
		{"1d12h", 36 * time.Hour, true},
		{"1d30m", day + 30*time.Minute, true},
		{"0d", 0, true},
		{"0", 0, true},
		{"26h", 26 * time.Hour, true},
		{"-24h", 0, false},
		{"30", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"-1d", 0, false},
		{"1d-1h", 0, false},
		{"1dd", 0, false},
		{"1w", 0, false},
		{"99999999999999d", 0, false},
		{"106751d24h", 0, false}, // past the largest time.Duration
	}
	for _, tt := range tests {
		var d longDuration
		err := d.Set(tt.in)
		switch {
		case tt.ok && (err != nil || time.Duration(d) != tt.want):
			t.Errorf("Set(%q) = %v, %v; want %v", tt.in, time.Duration(d), err, tt.want)
		case !tt.ok && (err == nil || !strings.Contains(err.Error(), "30d, 1d12h or 720h")):
			t.Errorf("Set(%q) = %v, %v; want an error naming the forms it takes", tt.in, time.Duration(d), err)
		}
	}
}

// FuzzLongDuration: Set never panics, never yields a negative duration,
// and agrees with time.ParseDuration on what that parses to zero or more.
func FuzzLongDuration(f *testing.F) {
	for _, s := range []string{"720h", "30d", "1d12h", "1d-1h", "106751d23h47m16s", "9223372036854775807d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d longDuration
		err := d.Set(s)
		if std, serr := time.ParseDuration(s); serr == nil && std >= 0 && (err != nil || time.Duration(d) != std) {
			t.Errorf("Set(%q) = %v, %v; time.ParseDuration says %v", s, time.Duration(d), err, std)
		}
		if err == nil && time.Duration(d) < 0 {
			t.Errorf("Set(%q) = %v: negative", s, time.Duration(d))
		}
	})
}
