package api

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/danielgtaylor/huma/v2"
)

// certPage is the body of a list of entries (ListOutput.Body). It is an alias of the
// anonymous struct, so the OpenAPI schema Huma derives from it is unchanged.
type certPage = struct {
	Items      []Cert `json:"items"`
	NextCursor string `json:"nextCursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page"`
}

// jsonFormat is Huma's default JSON format (encoding/json, no HTML escaping, a trailing
// newline) with a direct encoder for the bodies the hot paths answer: an entry, a page of
// entries and an error (a refused delete lists up to a thousand references), which writes exactly the bytes encoding/json writes for them without its
// reflection and its compaction of the times' MarshalJSON. TestFastEncodingMatchesJSON
// holds the two to the same bytes.
var jsonFormat = huma.Format{
	Marshal: func(w io.Writer, v any) error {
		var enc func([]byte) ([]byte, bool)
		switch b := v.(type) {
		case Cert:
			enc = func(buf []byte) ([]byte, bool) { return appendCert(buf, &b) }
		case *Cert:
			if b != nil {
				enc = func(buf []byte) ([]byte, bool) { return appendCert(buf, b) }
			}
		case certPage:
			enc = func(buf []byte) ([]byte, bool) { return appendCertPage(buf, &b) }
		case *certPage:
			if b != nil {
				enc = func(buf []byte) ([]byte, bool) { return appendCertPage(buf, b) }
			}
		case *ErrorBody:
			if b != nil && !hasNilDetail(b.Errors) {
				enc = func(buf []byte) ([]byte, bool) { return appendErrorBody(buf, b), true }
			}
		}
		if enc != nil {
			if done, err := writeFast(w, enc); done {
				return err
			}
		}
		return huma.DefaultJSONFormat.Marshal(w, v)
	},
	Unmarshal: huma.DefaultJSONFormat.Unmarshal,
}

var fastBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeFast writes what enc encodes, with the trailing newline of json.Encoder. It writes
// nothing and reports false when enc meets a value it leaves to encoding/json (a time
// outside the years 0-9999, which encoding/json refuses with its own error).
func writeFast(w io.Writer, enc func([]byte) ([]byte, bool)) (bool, error) {
	bp := fastBuffers.Get().(*[]byte)
	buf, ok := enc((*bp)[:0])
	if ok {
		buf = append(buf, '\n')
	}
	var err error
	if ok {
		_, err = w.Write(buf)
	}
	if cap(buf) <= 1<<20 {
		*bp = buf[:0]
		fastBuffers.Put(bp)
	}
	return ok, err
}

func appendCertPage(b []byte, p *certPage) ([]byte, bool) {
	b = append(b, `{"items":`...)
	if p.Items == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range p.Items {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = appendCert(b, &p.Items[i]); !ok {
				return b, false
			}
		}
		b = append(b, ']')
	}
	if p.NextCursor != "" {
		b = append(b, `,"nextCursor":`...)
		b = appendString(b, p.NextCursor)
	}
	return append(b, '}'), true
}

// appendCert encodes c field by field in the order of its declaration, as encoding/json
// does.
func appendCert(b []byte, c *Cert) ([]byte, bool) {
	ok := true
	str := func(key, v string) {
		b = append(b, key...)
		b = appendString(b, v)
	}
	tm := func(key string, t time.Time) {
		b = append(b, key...)
		if y := t.Year(); y < 0 || y > 9999 {
			ok = false
			return
		}
		b = append(b, '"')
		b = t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	str(`{"id":`, c.ID)
	str(`,"name":`, c.Name)
	str(`,"type":`, c.Type)
	str(`,"source":`, c.Source)
	str(`,"notes":`, c.Notes)
	if c.CertPath != "" {
		str(`,"certPath":`, c.CertPath)
	}
	if c.KeyPath != "" {
		str(`,"keyPath":`, c.KeyPath)
	}
	b = append(b, `,"hasPrivateKey":`...)
	b = strconv.AppendBool(b, c.HasPrivateKey)
	str(`,"fingerprintSha256":`, c.FingerprintSHA256)
	str(`,"subject":`, c.Subject)
	str(`,"issuer":`, c.Issuer)
	str(`,"serialNumber":`, c.SerialNumber)
	tm(`,"notBefore":`, c.NotBefore)
	tm(`,"notAfter":`, c.NotAfter)
	b = append(b, `,"dnsNames":`...)
	if c.DNSNames == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, n := range c.DNSNames {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, n)
		}
		b = append(b, ']')
	}
	b = append(b, `,"certCount":`...)
	b = strconv.AppendInt(b, int64(c.CertCount), 10)
	str(`,"keyAlgorithm":`, c.KeyAlgorithm)
	b = append(b, `,"expired":`...)
	b = strconv.AppendBool(b, c.Expired)
	b = append(b, `,"daysToExpiry":`...)
	b = strconv.AppendInt(b, int64(c.DaysToExpiry), 10)
	b = append(b, `,"referenceCount":`...)
	b = strconv.AppendInt(b, int64(c.ReferenceCount), 10)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, c.Version, 10)
	tm(`,"createdAt":`, c.CreatedAt)
	tm(`,"updatedAt":`, c.UpdatedAt)
	if c.PassphraseFile != "" {
		str(`,"passphraseFile":`, c.PassphraseFile)
	}
	return append(b, '}'), ok
}

// appendString quotes s as encoding/json does without HTML escaping: printable ASCII but
// the quote and the backslash goes as it is; anything else (control characters, invalid
// UTF-8, U+2028 and U+2029) takes encoding/json's own path.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return appendStringSlow(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendStringSlow(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}

func hasNilDetail(ds []*ErrorDetail) bool {
	for _, d := range ds {
		if d == nil {
			return true
		}
	}
	return false
}

// appendErrorBody encodes e as encoding/json does: its exported fields in order, the
// omitempty ones only when set.
func appendErrorBody(b []byte, e *ErrorBody) []byte {
	b = append(b, `{"error":`...)
	b = appendString(b, e.Title)
	b = append(b, `,"message":`...)
	b = appendString(b, e.Message)
	if len(e.Errors) > 0 {
		b = append(b, `,"errors":[`...)
		for i, d := range e.Errors {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"location":`...)
			b = appendString(b, d.Location)
			b = append(b, `,"message":`...)
			b = appendString(b, d.Message)
			for _, f := range []struct{ key, v string }{{`,"flowId":`, d.FlowID}, {`,"nodeId":`, d.NodeID},
				{`,"nodeType":`, d.NodeType}, {`,"field":`, d.Field}} {
				if f.v != "" {
					b = append(b, f.key...)
					b = appendString(b, f.v)
				}
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(e.References) > 0 {
		b = append(b, `,"references":[`...)
		for i, r := range e.References {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"flowId":`...)
			b = appendString(b, r.FlowID)
			b = append(b, `,"nodeId":`...)
			b = appendString(b, r.NodeID)
			b = append(b, `,"nodeType":`...)
			b = appendString(b, r.NodeType)
			b = append(b, `,"field":`...)
			b = appendString(b, r.Field)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if e.TotalReferences != 0 {
		b = append(b, `,"totalReferences":`...)
		b = strconv.AppendInt(b, int64(e.TotalReferences), 10)
	}
	if e.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = appendString(b, e.RequestID)
	}
	return append(b, '}')
}
