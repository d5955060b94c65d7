package autoscaler_test

import "encoding/json"

// show renders a generated externalgrpc message for a failure message. Never use %v on them:
// their String method goes through protobuf reflection, which panics on these types (see
// wirecodec.go).
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
