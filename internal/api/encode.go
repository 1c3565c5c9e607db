package api

import (
	"strconv"
	"time"
)

// certPage is the body of a list of entries (ListOutput.Body). It is an alias of the
// anonymous struct, so the OpenAPI schema Huma derives from it is unchanged.
type certPage = struct {
	Items      []Cert `json:"items"`
	NextCursor string `json:"nextCursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page"`
}

// fastBody is the jsonAppender for a body of the hot paths that cannot carry the method
// itself (an entry and a page of entries are plain structs, the page an alias of an
// anonymous one, and an error body's fields are Huma's): nil for any other body.
func fastBody(v any) jsonAppender {
	switch b := v.(type) {
	case Cert:
		return appendFunc(func(buf []byte) ([]byte, error) { return appendCert(buf, &b) })
	case *Cert:
		if b != nil {
			return appendFunc(func(buf []byte) ([]byte, error) { return appendCert(buf, b) })
		}
	case certPage:
		return appendFunc(func(buf []byte) ([]byte, error) { return appendCertPage(buf, &b) })
	case *certPage:
		if b != nil {
			return appendFunc(func(buf []byte) ([]byte, error) { return appendCertPage(buf, b) })
		}
	case *ErrorBody:
		if b != nil && !hasNilDetail(b.Errors) {
			return appendFunc(func(buf []byte) ([]byte, error) { return appendErrorBody(buf, b), nil })
		}
	}
	return nil
}

type appendFunc func([]byte) ([]byte, error)

func (f appendFunc) appendJSON(b []byte) ([]byte, error) { return f(b) }

func appendCertPage(b []byte, p *certPage) ([]byte, error) {
	return appendJSONPage(b, p.Items, p.NextCursor, appendCert)
}

// appendCert encodes c field by field in the order of its declaration, as encoding/json
// does.
func appendCert(b []byte, c *Cert) ([]byte, error) {
	var err error
	str := func(key, v string) {
		b = append(b, key...)
		b = appendJSONString(b, v)
	}
	tm := func(key string, t time.Time) {
		b = append(b, key...)
		var e error
		if b, e = appendJSONTime(b, t); e != nil && err == nil {
			err = e
		}
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
			b = appendJSONString(b, n)
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
	return append(b, '}'), err
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
	b = appendJSONString(b, e.Title)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, e.Message)
	if len(e.Errors) > 0 {
		b = append(b, `,"errors":[`...)
		for i, d := range e.Errors {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"location":`...)
			b = appendJSONString(b, d.Location)
			b = append(b, `,"message":`...)
			b = appendJSONString(b, d.Message)
			for _, f := range []struct{ key, v string }{{`,"flowId":`, d.FlowID}, {`,"nodeId":`, d.NodeID},
				{`,"nodeType":`, d.NodeType}, {`,"field":`, d.Field}} {
				if f.v != "" {
					b = append(b, f.key...)
					b = appendJSONString(b, f.v)
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
			b = appendJSONString(b, r.FlowID)
			b = append(b, `,"nodeId":`...)
			b = appendJSONString(b, r.NodeID)
			b = append(b, `,"nodeType":`...)
			b = appendJSONString(b, r.NodeType)
			b = append(b, `,"field":`...)
			b = appendJSONString(b, r.Field)
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
		b = appendJSONString(b, e.RequestID)
	}
	return append(b, '}')
}
