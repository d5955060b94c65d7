package node

import "testing"

func TestOneLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"resize of device /dev/sdb failed: exit status 1. resize2fs output: resize2fs 1.47.0 (5-Feb-2023)\nresize2fs: Permission denied to resize filesystem\n",
			"resize of device /dev/sdb failed: exit status 1. resize2fs output: resize2fs 1.47.0 (5-Feb-2023); resize2fs: Permission denied to resize filesystem"},
		{"a\r\n\n  b  \n", "a; b"},
	} {
		if got := oneLine(c.in); got != c.want {
			t.Errorf("oneLine(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
