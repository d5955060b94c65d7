package controller

import (
	"fmt"
	"sort"
)

// page selects one page of the sorted names. The token is the name the page starts at (the
// first one not returned by the previous page), so it stays meaningful when entries come and
// go between calls: nothing is returned twice, and a deleted token just starts at the next
// name. A token that could not have been issued (wrong form) is refused; CSI wants ABORTED.
func page(names []string, token string, maxEntries int32, validToken func(string) bool) (selected []string, next string, err error) {
	if maxEntries < 0 {
		return nil, "", fmt.Errorf("max_entries %d must not be negative", maxEntries)
	}
	if !sort.StringsAreSorted(names) {
		names = append([]string(nil), names...)
		sort.Strings(names)
	}
	start := 0
	if token != "" {
		if !validToken(token) {
			return nil, "", errInvalidToken
		}
		start = sort.SearchStrings(names, token)
	}
	end := len(names)
	if maxEntries > 0 && start+int(maxEntries) < end {
		end = start + int(maxEntries)
		next = names[end]
	}
	return names[start:end], next, nil
}

var errInvalidToken = fmt.Errorf("starting_token was not issued by this plugin")
