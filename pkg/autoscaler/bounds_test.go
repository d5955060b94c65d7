package autoscaler

import (
	"errors"
	"strings"
	"testing"
)

func TestParseBounds(t *testing.T) {
	tests := []struct {
		name       string
		ann        map[string]string
		want       Bounds
		autoscaled bool
		wantErr    string
	}{
		{"no annotations", nil, Bounds{}, false, ""},
		{"unrelated annotations", map[string]string{"foo": "1"}, Bounds{}, false, ""},
		{"both", map[string]string{AnnotationMinSize: "1", AnnotationMaxSize: "5"}, Bounds{1, 5}, true, ""},
		{"min equals max", map[string]string{AnnotationMinSize: "3", AnnotationMaxSize: "3"}, Bounds{3, 3}, true, ""},
		{"max only means min 0", map[string]string{AnnotationMaxSize: "4"}, Bounds{0, 4}, true, ""},
		{"min 0", map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "2"}, Bounds{0, 2}, true, ""},
		{"max below min", map[string]string{AnnotationMinSize: "5", AnnotationMaxSize: "2"}, Bounds{}, true, "below min"},
		{"max zero", map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "0"}, Bounds{}, true, "is 0"},
		{"min only", map[string]string{AnnotationMinSize: "1"}, Bounds{}, true, "is missing"},
		{"min not a number", map[string]string{AnnotationMinSize: "one", AnnotationMaxSize: "3"}, Bounds{}, true, `"one" is not`},
		{"max not a number", map[string]string{AnnotationMinSize: "1", AnnotationMaxSize: "3x"}, Bounds{}, true, `"3x" is not`},
		{"negative", map[string]string{AnnotationMinSize: "-1", AnnotationMaxSize: "3"}, Bounds{}, true, "not a non-negative"},
		{"plus sign", map[string]string{AnnotationMinSize: "+1", AnnotationMaxSize: "3"}, Bounds{}, true, "not a non-negative"},
		{"space", map[string]string{AnnotationMinSize: "1", AnnotationMaxSize: " 3"}, Bounds{}, true, "not a non-negative"},
		{"empty", map[string]string{AnnotationMinSize: "", AnnotationMaxSize: "3"}, Bounds{}, true, "not a non-negative"},
		{"overflow", map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "2147483648"}, Bounds{}, true, "32 bits"},
		{"int32 max", map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "2147483647"}, Bounds{0, 2147483647}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, autoscaled, err := ParseBounds(tt.ann)
			if autoscaled != tt.autoscaled {
				t.Errorf("autoscaled = %v, want %v", autoscaled, tt.autoscaled)
			}
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestBoundsMath(t *testing.T) {
	b := Bounds{Min: 1, Max: 5}
	tests := []struct {
		name    string
		call    func() (int32, error)
		want    int32
		wantErr error
	}{
		{"increase within", func() (int32, error) { return b.IncreaseTarget(2, 3) }, 5, nil},
		{"increase beyond max", func() (int32, error) { return b.IncreaseTarget(2, 4) }, 0, ErrOutOfBounds},
		{"increase zero", func() (int32, error) { return b.IncreaseTarget(2, 0) }, 0, ErrInvalidDelta},
		{"increase negative", func() (int32, error) { return b.IncreaseTarget(2, -1) }, 0, ErrInvalidDelta},
		{"increase overflow", func() (int32, error) { return Bounds{Max: 2147483647}.IncreaseTarget(2147483647, 1) }, 0, ErrOutOfBounds},
		{"increase when already above max", func() (int32, error) { return b.IncreaseTarget(7, 1) }, 0, ErrOutOfBounds},
		{"decrease unfulfilled", func() (int32, error) { return b.DecreaseTarget(4, -2, 2) }, 2, nil},
		{"decrease below registered", func() (int32, error) { return b.DecreaseTarget(4, -3, 2) }, 0, ErrOutOfBounds},
		{"decrease may go below min", func() (int32, error) { return b.DecreaseTarget(1, -1, 0) }, 0, nil},
		{"decrease negative result", func() (int32, error) { return b.DecreaseTarget(1, -2, 0) }, 0, ErrOutOfBounds},
		{"decrease positive delta", func() (int32, error) { return b.DecreaseTarget(4, 1, 0) }, 0, ErrInvalidDelta},
		{"decrease zero delta", func() (int32, error) { return b.DecreaseTarget(4, 0, 0) }, 0, ErrInvalidDelta},
		{"delete within", func() (int32, error) { return b.DeleteTarget(3, 2) }, 1, nil},
		{"delete below min", func() (int32, error) { return b.DeleteTarget(3, 3) }, 0, ErrOutOfBounds},
		{"delete nothing", func() (int32, error) { return b.DeleteTarget(3, 0) }, 3, nil},
		{"delete negative", func() (int32, error) { return b.DeleteTarget(3, -1) }, 0, ErrInvalidDelta},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && got != tt.want) {
				t.Fatalf("got %d, %v; want %d, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
