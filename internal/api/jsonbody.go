package api

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
)

// jsonAppender is a response body that writes its own JSON: byte for byte what Huma's
// JSON format (encoding/json, HTML escaping off) writes for the same value, without
// reflection, a Marshaler call per timestamp and the compaction of its output. Long
// listings implement it; the schema is still the Go type's.
type jsonAppender interface {
	appendJSON(b []byte) ([]byte, error)
}

// jsonFormat is Huma's JSON format, with jsonAppender bodies written by themselves and
// the bodies fastBody knows written by it.
var jsonFormat = huma.Format{
	Marshal: func(w io.Writer, v any) error {
		a, ok := v.(jsonAppender)
		if !ok {
			if a = fastBody(v); a == nil {
				return huma.DefaultJSONFormat.Marshal(w, v)
			}
		}
		bp := jsonBuffers.Get().(*[]byte)
		b, err := a.appendJSON((*bp)[:0])
		if err == nil {
			_, err = w.Write(append(b, '\n'))
		}
		if cap(b) <= maxPooledJSON {
			*bp = b[:0]
			jsonBuffers.Put(bp)
		}
		return err
	},
	Unmarshal: huma.DefaultJSONFormat.Unmarshal,
}

// maxPooledJSON bounds the buffers kept for the next response (a page of 1,000 versions
// is about 300 KiB).
const maxPooledJSON = 1 << 20

var jsonBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// appendJSONString appends s as encoding/json writes a string with HTML escaping off.
// Printable ASCII without quote or backslash is copied; anything else goes through
// encoding/json itself, so escapes, invalid UTF-8 and U+2028 come out as it writes them.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return appendJSONStringSlow(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendJSONStringSlow(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// appendJSONTime appends t as time.Time.MarshalJSON writes it (RFC 3339 with the
// nanoseconds it has); a time outside UTC or the years 0 to 9999 goes through
// MarshalJSON itself, which checks what it refuses.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); t.Location() != time.UTC || y < 0 || y > 9999 {
		j, err := t.MarshalJSON()
		return append(b, j...), err
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

func appendJSONInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// appendJSONPage writes a page body, {"items":[...],"nextCursor":...} as encoding/json
// writes it (null for nil items, the cursor omitted when empty), each item by item.
func appendJSONPage[T any](b []byte, items []T, cursor string, item func([]byte, *T) ([]byte, error)) ([]byte, error) {
	if items == nil {
		b = append(b, `{"items":null`...)
	} else {
		b = append(b, `{"items":[`...)
		for i := range items {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = item(b, &items[i]); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	if cursor != "" {
		b = append(b, `,"nextCursor":`...)
		b = appendJSONString(b, cursor)
	}
	return append(b, '}'), nil
}
