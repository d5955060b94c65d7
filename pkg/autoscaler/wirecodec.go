package autoscaler

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// Why a codec of our own: the generated externalgrpc types embed Kubernetes API types
// (core/v1 Node and Pod, meta/v1 Time and Duration). Since Kubernetes 1.35 those no longer
// implement the protobuf-go message interfaces, so the first proto.Marshal of ANY message of the
// externalgrpc file panics ("message *v1.Time is neither a v1 or v2 Message") while protobuf-go
// resolves the file's dependencies. The wire format itself is unchanged, and the Kubernetes
// types still carry their own Marshal/Unmarshal methods, so this codec walks the generated
// structs by their `protobuf` struct tags with plain Go reflection and encodes them with
// protowire. It is byte-compatible with cluster-autoscaler's client, which was built against
// an older k8s.io/api where the same types are proto messages.

// Codec returns the gRPC codec for the CloudProvider service: externalgrpc messages go through
// the tag-driven encoder, everything else (the health service, status details) through
// protobuf-go. Servers install it with grpc.ForceServerCodec, Go clients with grpc.ForceCodec.
func Codec() encoding.Codec { return wireCodec{} }

type wireCodec struct {
	// encoded, when set (the server's codec), returns the bytes of a message that were encoded
	// before, if it knows v: the table's shared NodeGroups answer is encoded once per change
	// instead of once per call.
	encoded func(v any) ([]byte, bool)
}

// Name keeps the standard content-subtype, so clients that use the stock proto codec (such as
// cluster-autoscaler) interoperate.
func (wireCodec) Name() string { return "proto" }

func (c wireCodec) Marshal(v any) ([]byte, error) {
	if c.encoded != nil {
		if b, ok := c.encoded(v); ok {
			return b, nil
		}
	}
	if rv, ok := externalGRPCMessage(v); ok {
		p, err := planFor(rv.Type())
		if err != nil {
			return nil, err
		}
		// Sized like the last message of this type, so that a typical answer is encoded into
		// one allocation instead of a run of doublings.
		b, err := marshalStruct(make([]byte, 0, p.lastSize.Load()), rv)
		if err == nil {
			p.lastSize.Store(int64(len(b)))
		}
		return b, err
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("wire codec: cannot marshal %T: not a protobuf message", v)
	}
	return proto.Marshal(m)
}

func (wireCodec) Unmarshal(data []byte, v any) error {
	if rv, ok := externalGRPCMessage(v); ok {
		// proto.Unmarshal semantics: the message is reset first.
		rv.Set(reflect.Zero(rv.Type()))
		return unmarshalStruct(data, rv)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("wire codec: cannot unmarshal into %T: not a protobuf message", v)
	}
	return proto.Unmarshal(data, m)
}

var protosPkgPath = reflect.TypeFor[protos.NodeGroup]().PkgPath()

// externalGRPCMessage returns the struct v points to if v is a message of the externalgrpc
// protos package.
func externalGRPCMessage(v any) (reflect.Value, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return reflect.Value{}, false
	}
	if rv.Elem().Type().PkgPath() != protosPkgPath {
		return reflect.Value{}, false
	}
	return rv.Elem(), true
}

// gogoMessage is what generated Kubernetes API types still implement.
type gogoMessage interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

var (
	gogoMessageType  = reflect.TypeFor[gogoMessage]()
	protoMessageType = reflect.TypeFor[proto.Message]()
)

// fieldKind is how one Go field is carried on the wire.
type fieldKind int

const (
	kindString     fieldKind = iota // string, wire type bytes
	kindInt32                       // int32 or an enum, wire type varint
	kindBool                        // bool, wire type varint
	kindDouble                      // float64, wire type fixed64
	kindMessage                     // pointer to an externalgrpc struct
	kindGogo                        // pointer to a Kubernetes API type
	kindProto                       // pointer to a protobuf-go message (anypb.Any)
	kindStringMap                   // map[string]string
	kindMessageMap                  // map[string]<message>
)

type fieldInfo struct {
	index    int
	num      protowire.Number
	kind     fieldKind
	repeated bool         // []<pointer>, one element per occurrence
	elem     reflect.Type // element type (pointer) for messages, map values
	valKind  fieldKind    // for kindMessageMap: how the value is carried
	name     string
}

// plan is how one externalgrpc struct type is encoded.
type plan struct {
	fields []fieldInfo
	// lastSize is the length of the last top-level encoding of this type: the next one's
	// initial capacity.
	lastSize atomic.Int64
}

var plans sync.Map // reflect.Type → *plan or error

func planFor(t reflect.Type) (*plan, error) {
	if p, ok := plans.Load(t); ok {
		if err, isErr := p.(error); isErr {
			return nil, err
		}
		return p.(*plan), nil
	}
	fields, err := buildPlan(t)
	if err != nil {
		plans.Store(t, err)
		return nil, err
	}
	p, _ := plans.LoadOrStore(t, &plan{fields: fields})
	return p.(*plan), nil
}

func buildPlan(t reflect.Type) ([]fieldInfo, error) {
	var fields []fieldInfo
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("protobuf")
		if !ok {
			continue // generated bookkeeping (state, sizeCache, unknownFields)
		}
		parts := strings.Split(tag, ",")
		if len(parts) < 3 {
			return nil, fmt.Errorf("wire codec: %s.%s: malformed protobuf tag %q", t.Name(), sf.Name, tag)
		}
		n, err := strconv.Atoi(parts[1])
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("wire codec: %s.%s: bad field number in %q", t.Name(), sf.Name, tag)
		}
		f := fieldInfo{index: i, num: protowire.Number(n), name: t.Name() + "." + sf.Name}
		if f.kind, f.repeated, f.elem, f.valKind, err = classify(sf.Type); err != nil {
			return nil, fmt.Errorf("wire codec: %s: %w", f.name, err)
		}
		fields = append(fields, f)
	}
	return fields, nil
}

// classify maps a Go field type onto the handful of shapes the externalgrpc proto uses.
func classify(t reflect.Type) (kind fieldKind, repeated bool, elem reflect.Type, valKind fieldKind, err error) {
	switch t.Kind() {
	case reflect.String:
		return kindString, false, nil, 0, nil
	case reflect.Int32:
		return kindInt32, false, nil, 0, nil
	case reflect.Bool:
		return kindBool, false, nil, 0, nil
	case reflect.Float64:
		return kindDouble, false, nil, 0, nil
	case reflect.Pointer:
		k, err := pointerKind(t)
		return k, false, t, 0, err
	case reflect.Slice:
		if t.Elem().Kind() != reflect.Pointer {
			return 0, false, nil, 0, fmt.Errorf("unsupported repeated type %s", t)
		}
		k, err := pointerKind(t.Elem())
		return k, true, t.Elem(), 0, err
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return 0, false, nil, 0, fmt.Errorf("unsupported map key type %s", t.Key())
		}
		if t.Elem().Kind() == reflect.String {
			return kindStringMap, false, nil, 0, nil
		}
		if t.Elem().Kind() != reflect.Pointer {
			return 0, false, nil, 0, fmt.Errorf("unsupported map value type %s", t.Elem())
		}
		vk, err := pointerKind(t.Elem())
		return kindMessageMap, false, t.Elem(), vk, err
	}
	return 0, false, nil, 0, fmt.Errorf("unsupported field type %s", t)
}

func pointerKind(t reflect.Type) (fieldKind, error) {
	switch {
	case t.Elem().Kind() == reflect.Struct && t.Elem().PkgPath() == protosPkgPath:
		return kindMessage, nil
	case t.Implements(gogoMessageType):
		return kindGogo, nil
	case t.Implements(protoMessageType):
		return kindProto, nil
	}
	return 0, fmt.Errorf("unsupported message type %s", t)
}

// marshalStruct appends the encoding of the externalgrpc struct v to b.
func marshalStruct(b []byte, v reflect.Value) ([]byte, error) {
	p, err := planFor(v.Type())
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{} // an empty message is zero bytes, not nil: gRPC sends both the same way
	}
	for i := range p.fields {
		f := &p.fields[i]
		fv := v.Field(f.index)
		switch {
		case f.kind == kindStringMap:
			for _, k := range sortedKeys(fv) {
				var entry []byte
				entry = appendString(entry, 1, k)
				entry = appendString(entry, 2, fv.MapIndex(reflect.ValueOf(k)).String())
				b = protowire.AppendTag(b, f.num, protowire.BytesType)
				b = protowire.AppendBytes(b, entry)
			}
		case f.kind == kindMessageMap:
			for _, k := range sortedKeys(fv) {
				entry := appendString(nil, 1, k)
				val, err := marshalPointer(fv.MapIndex(reflect.ValueOf(k)), f.valKind)
				if err != nil {
					return nil, fmt.Errorf("%s[%q]: %w", f.name, k, err)
				}
				entry = protowire.AppendTag(entry, 2, protowire.BytesType)
				entry = protowire.AppendBytes(entry, val)
				b = protowire.AppendTag(b, f.num, protowire.BytesType)
				b = protowire.AppendBytes(b, entry)
			}
		case f.repeated:
			for i := range fv.Len() {
				el := fv.Index(i)
				if el.IsNil() {
					return nil, fmt.Errorf("%s[%d]: nil element", f.name, i)
				}
				if b, err = appendMessage(b, f.num, el, f.kind); err != nil {
					return nil, fmt.Errorf("%s[%d]: %w", f.name, i, err)
				}
			}
		default:
			if b, err = appendSingular(b, f, fv); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

// appendMessage appends message field num holding p. An externalgrpc message is encoded in
// place behind a one-byte length that is widened afterwards if it was longer than 127 bytes,
// instead of into a buffer of its own that is then copied: the answers are mostly small nested
// messages, and each buffer was an allocation per message per call.
func appendMessage(b []byte, num protowire.Number, p reflect.Value, kind fieldKind) ([]byte, error) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	if kind != kindMessage {
		data, err := marshalPointer(p, kind)
		if err != nil {
			return nil, err
		}
		return protowire.AppendBytes(b, data), nil
	}
	at := len(b)
	b = append(b, 0)
	b, err := marshalStruct(b, p.Elem())
	if err != nil {
		return nil, err
	}
	n := len(b) - at - 1
	if size := protowire.SizeVarint(uint64(n)); size > 1 {
		b = append(b, make([]byte, size-1)...)
		copy(b[at+size:], b[at+1:at+1+n])
	}
	protowire.AppendVarint(b[at:at], uint64(n))
	return b, nil
}

// appendSingular encodes one non-repeated field, leaving proto3 zero values out.
func appendSingular(b []byte, f *fieldInfo, fv reflect.Value) ([]byte, error) {
	switch f.kind {
	case kindString:
		if s := fv.String(); s != "" {
			b = appendString(b, f.num, s)
		}
	case kindInt32:
		if n := fv.Int(); n != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			// Negative int32 values are sign-extended to 64 bits on the wire.
			b = protowire.AppendVarint(b, uint64(n))
		}
	case kindBool:
		if fv.Bool() {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, 1)
		}
	case kindDouble:
		if x := fv.Float(); x != 0 || math.Signbit(x) {
			b = protowire.AppendTag(b, f.num, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, math.Float64bits(x))
		}
	default: // message-typed: present iff non-nil
		if fv.IsNil() {
			return b, nil
		}
		var err error
		if b, err = appendMessage(b, f.num, fv, f.kind); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return b, nil
}

func marshalPointer(p reflect.Value, kind fieldKind) ([]byte, error) {
	switch kind {
	case kindMessage:
		return marshalStruct(nil, p.Elem())
	case kindGogo:
		return p.Interface().(gogoMessage).Marshal()
	case kindProto:
		return proto.Marshal(p.Interface().(proto.Message))
	}
	return nil, fmt.Errorf("field kind %d is not a message", kind)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// sortedKeys makes map encoding deterministic, which keeps golden-byte tests meaningful.
func sortedKeys(m reflect.Value) []string {
	keys := make([]string, 0, m.Len())
	for _, k := range m.MapKeys() {
		keys = append(keys, k.String())
	}
	slices.Sort(keys)
	return keys
}

// unmarshalStruct decodes data into the externalgrpc struct v. Unknown fields are skipped, as
// protobuf requires, so a newer client's additions do not break this server.
func unmarshalStruct(data []byte, v reflect.Value) error {
	p, err := planFor(v.Type())
	if err != nil {
		return err
	}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return fmt.Errorf("wire codec: %s: %w", v.Type().Name(), protowire.ParseError(n))
		}
		data = data[n:]
		f := p.field(num)
		if f == nil {
			m := protowire.ConsumeFieldValue(num, typ, data)
			if m < 0 {
				return fmt.Errorf("wire codec: %s field %d: %w", v.Type().Name(), num, protowire.ParseError(m))
			}
			data = data[m:]
			continue
		}
		m, err := decodeField(f, typ, data, v.Field(f.index))
		if err != nil {
			return fmt.Errorf("wire codec: %s: %w", f.name, err)
		}
		data = data[m:]
	}
	return nil
}

// field returns the field numbered num, nil for an unknown one. The messages have a handful of
// fields, so a scan beats building a map per decoded message.
func (p *plan) field(num protowire.Number) *fieldInfo {
	for i := range p.fields {
		if p.fields[i].num == num {
			return &p.fields[i]
		}
	}
	return nil
}

var errWireType = errors.New("unexpected wire type")

// decodeField consumes one occurrence of field f from data and returns how many bytes it used.
func decodeField(f *fieldInfo, typ protowire.Type, data []byte, fv reflect.Value) (int, error) {
	switch f.kind {
	case kindInt32, kindBool:
		if typ != protowire.VarintType {
			return 0, errWireType
		}
		x, n := protowire.ConsumeVarint(data)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		if f.kind == kindBool {
			fv.SetBool(x != 0)
		} else {
			fv.SetInt(int64(int32(x))) // proto int32 semantics: truncate
		}
		return n, nil
	case kindDouble:
		if typ != protowire.Fixed64Type {
			return 0, errWireType
		}
		x, n := protowire.ConsumeFixed64(data)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		fv.SetFloat(math.Float64frombits(x))
		return n, nil
	}
	if typ != protowire.BytesType {
		return 0, errWireType
	}
	payload, n := protowire.ConsumeBytes(data)
	if n < 0 {
		return 0, protowire.ParseError(n)
	}
	switch {
	case f.kind == kindString:
		fv.SetString(string(payload))
	case f.kind == kindStringMap || f.kind == kindMessageMap:
		if err := decodeMapEntry(f, payload, fv); err != nil {
			return 0, err
		}
	case f.repeated:
		el, err := decodePointer(f.elem, f.kind, payload)
		if err != nil {
			return 0, err
		}
		fv.Set(reflect.Append(fv, el))
	default:
		// A repeated occurrence of a singular message merges in protobuf; the messages here are
		// never split, so the last one wins, which is simpler and equivalent for them.
		el, err := decodePointer(f.elem, f.kind, payload)
		if err != nil {
			return 0, err
		}
		fv.Set(el)
	}
	return n, nil
}

func decodePointer(t reflect.Type, kind fieldKind, payload []byte) (reflect.Value, error) {
	p := reflect.New(t.Elem())
	var err error
	switch kind {
	case kindMessage:
		err = unmarshalStruct(payload, p.Elem())
	case kindGogo:
		err = p.Interface().(gogoMessage).Unmarshal(payload)
	case kindProto:
		err = proto.Unmarshal(payload, p.Interface().(proto.Message))
	default:
		err = fmt.Errorf("field kind %d is not a message", kind)
	}
	return p, err
}

func decodeMapEntry(f *fieldInfo, entry []byte, m reflect.Value) error {
	if m.IsNil() {
		m.Set(reflect.MakeMap(m.Type()))
	}
	var key string
	val := reflect.Zero(m.Type().Elem())
	if f.kind == kindStringMap {
		val = reflect.ValueOf("")
	}
	for len(entry) > 0 {
		num, typ, n := protowire.ConsumeTag(entry)
		if n < 0 {
			return protowire.ParseError(n)
		}
		entry = entry[n:]
		if (num != 1 && num != 2) || typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, entry)
			if m < 0 {
				return protowire.ParseError(m)
			}
			entry = entry[m:]
			continue
		}
		payload, n := protowire.ConsumeBytes(entry)
		if n < 0 {
			return protowire.ParseError(n)
		}
		entry = entry[n:]
		switch {
		case num == 1:
			key = string(payload)
		case f.kind == kindStringMap:
			val = reflect.ValueOf(string(payload))
		default:
			v, err := decodePointer(f.elem, f.valKind, payload)
			if err != nil {
				return err
			}
			val = v
		}
	}
	m.SetMapIndex(reflect.ValueOf(key), val)
	return nil
}
