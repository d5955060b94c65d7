package scrape

import "testing"

func TestParse(t *testing.T) {
	s, err := Parse(`# HELP x_total h
# TYPE x_total counter
x_total{component="ccm",operation="A",outcome="OK"} 3
x_total{component="ccm",operation="A",outcome="Error"} 1
x_total{component="ccm",operation="B",outcome="OK"} 5
up 1
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := s[`x_total{component="ccm",operation="A",outcome="OK"}`]; got != 3 {
		t.Errorf("series = %v", got)
	}
	if got := s.Sum("x_total", `operation="A"`); got != 4 {
		t.Errorf("Sum A = %v, want 4", got)
	}
	if got := s.Sum("up"); got != 1 {
		t.Errorf("Sum up = %v", got)
	}
	if _, err := Parse("novalue\n"); err == nil {
		t.Error("malformed line accepted")
	}
}
