package api

import (
	"strconv"

	"github.com/loopze/certstore/internal/material"
)

// entryPage is the body of a list of entries (ListOutput.Body). It is an alias of the
// anonymous struct, so the OpenAPI schema Huma derives from it is unchanged.
type entryPage = struct {
	Items      []Entry `json:"items"`
	NextCursor string  `json:"nextCursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page"`
}

// fastBody is the jsonAppender for a body of the hot paths that cannot carry the method
// itself (an entry and a page of entries are plain structs, the page an alias of an
// anonymous one, and an error body's fields are Huma's): nil for any other body.
func fastBody(v any) jsonAppender {
	switch b := v.(type) {
	case Entry:
		return appendFunc(func(buf []byte) ([]byte, error) { return appendEntry(buf, &b) })
	case *Entry:
		if b != nil {
			return appendFunc(func(buf []byte) ([]byte, error) { return appendEntry(buf, b) })
		}
	case entryPage:
		return appendFunc(func(buf []byte) ([]byte, error) { return appendEntryPage(buf, &b) })
	case *entryPage:
		if b != nil {
			return appendFunc(func(buf []byte) ([]byte, error) { return appendEntryPage(buf, b) })
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

func appendEntryPage(b []byte, p *entryPage) ([]byte, error) {
	return appendJSONPage(b, p.Items, p.NextCursor, appendEntry)
}

// appendEntry encodes e field by field in the order of its declaration, as encoding/json
// does.
func appendEntry(b []byte, e *Entry) ([]byte, error) {
	str := func(key, v string) {
		b = append(b, key...)
		b = appendJSONString(b, v)
	}
	str(`{"id":`, e.ID)
	str(`,"name":`, e.Name)
	str(`,"type":`, e.Type)
	str(`,"source":`, e.Source)
	str(`,"notes":`, e.Notes)
	if e.CertPath != "" {
		str(`,"certPath":`, e.CertPath)
	}
	if e.KeyPath != "" {
		str(`,"keyPath":`, e.KeyPath)
	}
	var err error
	if b, err = appendMetadata(b, &e.Metadata.Metadata); err != nil {
		return b, err
	}
	b = append(b, `,"expired":`...)
	b = strconv.AppendBool(b, e.Expired)
	b = append(b, `,"daysToExpiry":`...)
	b = appendJSONInt(b, int64(e.DaysToExpiry))
	b = append(b, `,"referenceCount":`...)
	b = appendJSONInt(b, int64(e.ReferenceCount))
	b = append(b, `,"version":`...)
	b = appendJSONInt(b, e.Version)
	b = append(b, `,"createdAt":`...)
	if b, err = appendJSONTime(b, e.CreatedAt); err != nil {
		return b, err
	}
	b = append(b, `,"updatedAt":`...)
	if b, err = appendJSONTime(b, e.UpdatedAt); err != nil {
		return b, err
	}
	if e.PassphraseFile != "" {
		str(`,"passphraseFile":`, e.PassphraseFile)
	}
	return append(b, '}'), nil
}

// appendMetadata writes the fields of m as encoding/json writes them inside the object
// that embeds it (each after a comma: metadata is never first). It is the one list of
// metadata fields in the API's own encoders.
func appendMetadata(b []byte, m *material.Metadata) ([]byte, error) {
	var err error
	b = append(b, `,"fingerprintSha256":`...)
	b = appendJSONString(b, m.FingerprintSHA256)
	b = append(b, `,"subject":`...)
	b = appendJSONString(b, m.Subject)
	b = append(b, `,"issuer":`...)
	b = appendJSONString(b, m.Issuer)
	b = append(b, `,"serialNumber":`...)
	b = appendJSONString(b, m.SerialNumber)
	b = append(b, `,"notBefore":`...)
	if b, err = appendJSONTime(b, m.NotBefore); err != nil {
		return b, err
	}
	b = append(b, `,"notAfter":`...)
	if b, err = appendJSONTime(b, m.NotAfter); err != nil {
		return b, err
	}
	b = append(b, `,"dnsNames":`...)
	if m.DNSNames == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, n := range m.DNSNames {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, n)
		}
		b = append(b, ']')
	}
	b = append(b, `,"certCount":`...)
	b = appendJSONInt(b, int64(m.CertCount))
	b = append(b, `,"keyAlgorithm":`...)
	b = appendJSONString(b, m.KeyAlgorithm)
	b = append(b, `,"hasPrivateKey":`...)
	return strconv.AppendBool(b, m.HasPrivateKey), nil
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
