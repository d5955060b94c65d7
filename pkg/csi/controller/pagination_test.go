package controller

import (
	"errors"
	"slices"
	"testing"
)

func TestPage(t *testing.T) {
	names := []string{"tc-a", "tc-b", "tc-c", "tc-d", "tc-e"}
	valid := func(s string) bool { return len(s) > 3 && s[:3] == "tc-" }
	tests := []struct {
		name     string
		names    []string
		token    string
		max      int32
		want     []string
		wantNext string
		wantErr  error
	}{
		{name: "all", names: names, want: names},
		{name: "first page", names: names, max: 2, want: []string{"tc-a", "tc-b"}, wantNext: "tc-c"},
		{name: "middle page", names: names, token: "tc-c", max: 2, want: []string{"tc-c", "tc-d"}, wantNext: "tc-e"},
		{name: "last page exact", names: names, token: "tc-d", max: 2, want: []string{"tc-d", "tc-e"}},
		{name: "rest without max", names: names, token: "tc-c", want: []string{"tc-c", "tc-d", "tc-e"}},
		{name: "token deleted meanwhile", names: []string{"tc-a", "tc-b", "tc-d", "tc-e"}, token: "tc-c", max: 1, want: []string{"tc-d"}, wantNext: "tc-e"},
		{name: "token past the end", names: names, token: "tc-z", want: []string{}},
		{name: "unsorted input", names: []string{"tc-c", "tc-a", "tc-b"}, max: 2, want: []string{"tc-a", "tc-b"}, wantNext: "tc-c"},
		{name: "empty", names: nil, max: 3, want: []string{}},
		{name: "invalid token", names: names, token: "invalid-token", wantErr: errInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := page(tt.names, tt.token, tt.max, valid)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) || next != tt.wantNext {
				t.Fatalf("page = %v, %q, %v; want %v, %q", got, next, err, tt.want, tt.wantNext)
			}
		})
	}
	if _, _, err := page(names, "", -1, valid); err == nil {
		t.Error("negative max_entries accepted")
	}
}
