package api

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
)

// TestFastEncodingMatchesJSON: the direct encoder of entries, their metadata and pages
// writes the bytes encoding/json writes (as Huma's default format runs it) for every shape
// of value: optional fields set and not, nil and empty lists, strings that need escaping
// (quotes, control characters, invalid UTF-8, U+2028, HTML characters), times in any zone
// and precision, and a time encoding/json refuses.
func TestFastEncodingMatchesJSON(t *testing.T) {
	t.Parallel()
	strs := []string{"", "plain", `quo"te`, `back\slash`, "tab\tnew\nline\r", "\x00\x01\x1f\x7f", "<script>&amp;</script>",
		"caf\u00e9 \u2028 \u2029 \U0001F512", "bad \xff\xfe utf8", "CN=edge,O=Acme\\, Inc.", "/etc/loopze/certs/edge.crt"}
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+30*60), time.FixedZone("y", -8*3600)}
	rnd := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return strs[rnd.IntN(len(strs))] }
	when := func() time.Time {
		return time.Unix(rnd.Int64N(1<<35), rnd.Int64N(1e9)*int64(rnd.IntN(2))).In(zones[rnd.IntN(len(zones))])
	}
	meta := func() material.Metadata {
		m := material.Metadata{FingerprintSHA256: pick(), Subject: pick(), Issuer: pick(), SerialNumber: pick(),
			NotBefore: when(), NotAfter: when(), CertCount: rnd.IntN(5) - 1, KeyAlgorithm: pick(), HasPrivateKey: rnd.IntN(2) == 0}
		switch rnd.IntN(3) {
		case 0:
			m.DNSNames = nil
		case 1:
			m.DNSNames = []string{}
		default:
			m.DNSNames = []string{pick(), pick()}
		}
		return m
	}
	cert := func() Entry {
		c := Entry{ID: pick(), Name: pick(), Type: pick(), Source: pick(), Notes: pick(),
			Metadata:       Metadata{Metadata: meta(), Expired: rnd.IntN(2) == 0, DaysToExpiry: rnd.IntN(2000) - 1000},
			ReferenceCount: rnd.IntN(1 << 20), Version: rnd.Int64(), CreatedAt: when(), UpdatedAt: when()}
		if rnd.IntN(2) == 0 {
			c.CertPath, c.KeyPath, c.PassphraseFile = pick(), pick(), pick()
		}
		return c
	}
	want := func(v any) string {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		require.NoError(t, enc.Encode(v))
		return buf.String()
	}
	got := func(v any) string {
		var buf bytes.Buffer
		require.NoError(t, jsonFormat.Marshal(&buf, v))
		return buf.String()
	}
	for range 500 {
		// The metadata alone, as the object that embeds it would hold it.
		m := meta()
		b, err := appendMetadata([]byte("{"), &m)
		require.NoError(t, err)
		require.Equal(t, want(m), "{"+string(b[2:])+"}\n")
		c := cert()
		require.Equal(t, want(c), got(c))
		require.Equal(t, want(&c), got(&c))
		p := entryPage{NextCursor: pick()}
		for range rnd.IntN(4) {
			p.Items = append(p.Items, cert())
		}
		if p.Items == nil && rnd.IntN(2) == 0 {
			p.Items = []Entry{}
		}
		require.Equal(t, want(p), got(p))
		require.Equal(t, want(&p), got(&p))
	}
	for range 300 {
		e := &ErrorBody{status: 409, Title: pick(), Message: pick(), TotalReferences: rnd.IntN(3) * rnd.IntN(1000), RequestID: pick()}
		for range rnd.IntN(3) {
			e.Errors = append(e.Errors, &ErrorDetail{Location: pick(), Message: pick(), FlowID: pick(), NodeID: pick(), NodeType: pick(), Field: pick()})
		}
		for range rnd.IntN(4) {
			e.References = append(e.References, Reference{FlowID: pick(), NodeID: pick(), NodeType: pick(), Field: pick()})
		}
		if rnd.IntN(4) == 0 {
			e.Errors, e.References = []*ErrorDetail{}, []Reference{}
		}
		require.Equal(t, want(e), got(e))
	}
	require.Equal(t, want(&ErrorBody{Errors: []*ErrorDetail{nil}}), got(&ErrorBody{Errors: []*ErrorDetail{nil}}))
	// encoding/json refuses a year past 9999; so does the format, with encoding/json's error.
	for _, set := range []func(*Entry, time.Time){
		func(e *Entry, t time.Time) { e.NotBefore = t },
		func(e *Entry, t time.Time) { e.NotAfter = t },
		func(e *Entry, t time.Time) { e.UpdatedAt = t },
	} {
		c := cert()
		set(&c, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))
		var buf bytes.Buffer
		_, wantErr := json.Marshal(c)
		err := jsonFormat.Marshal(&buf, c)
		require.Error(t, wantErr)
		require.Error(t, err)
		require.Empty(t, buf.String())
	}
	// Other bodies take Huma's default format.
	require.Equal(t, want(Problem{Location: "body.x", Message: "<&>"}), got(Problem{Location: "body.x", Message: "<&>"}))
}
