package exitcode

import (
	"errors"
	"fmt"
	"testing"
)

func TestOf(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, OK},
		{"plain", base, Failure},
		{"usage", With(Usage, base), Usage},
		{"wrapped preflight", fmt.Errorf("save: %w", With(Preflight, base)), Preflight},
		{"outermost wins", With(Verify, fmt.Errorf("x: %w", With(Failure, base))), Verify},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Of(tt.err); got != tt.want {
				t.Errorf("Of(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
	if With(Usage, nil) != nil {
		t.Error("With(code, nil) must be nil")
	}
	if !errors.Is(With(Verify, base), base) {
		t.Error("With must keep the cause reachable through errors.Is")
	}
}
