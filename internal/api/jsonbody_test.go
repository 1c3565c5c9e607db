package api

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stretchr/testify/require"
)

// sameJSON checks that jsonFormat writes v exactly as Huma's own JSON format does, or
// refuses it as that does.
func sameJSON(t *testing.T, v any) {
	t.Helper()
	var want, got bytes.Buffer
	wantErr := huma.DefaultJSONFormat.Marshal(&want, v)
	gotErr := jsonFormat.Marshal(&got, v)
	if wantErr != nil {
		require.Error(t, gotErr, "encoding/json refused %#v", v)
		return
	}
	require.NoError(t, gotErr)
	require.Equal(t, want.String(), got.String())
}

// jsonStrings are the strings whose encodings differ: plain, quoted, escaped, HTML,
// control characters, multi-byte, invalid UTF-8, the line and paragraph separators.
var jsonStrings = []string{
	"", "update", "client-pair", "Pair root", `say "hi"`, `back\slash`, "<a href='x'>&amp;</a>",
	"tab\tnew\nline\rcr", "\x00\x01\x1f\x7f", "\b\f", "Zertifikat für München", "証明書", "emoji 🔐",
	"bad \xff\xfe utf-8", "trunc \xe2\x82", "sep \u2028 \u2029", "A1:B2:C3", "/etc/loopze/certs/ca.pem",
}

func jsonTimes() []time.Time {
	return []time.Time{
		time.Date(2026, 12, 2, 4, 34, 35, 0, time.UTC),
		time.Date(2026, 12, 2, 4, 34, 35, 123456000, time.UTC),
		time.Date(2026, 12, 2, 4, 34, 35, 100, time.UTC),
		time.Date(2026, 12, 2, 4, 34, 35, 123456000, time.FixedZone("CET", 3600)),
		time.Date(2026, 12, 2, 4, 34, 35, 0, time.FixedZone("odd", 5*3600+1800+17)),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		{},
	}
}

// TestVersionsPageJSON: the history listing's own encoder writes what encoding/json
// writes for the same page, for every kind of string, time and number it may meet.
func TestVersionsPageJSON(t *testing.T) {
	t.Parallel()
	sameJSON(t, VersionsOutputBody{})
	sameJSON(t, VersionsOutputBody{Items: []VersionSummary{}})
	sameJSON(t, VersionsOutputBody{Items: []VersionSummary{{}}, NextCursor: "MTIz"})

	times := jsonTimes()
	ints := []int64{0, 1, 7, -1, 1000, math.MaxInt64, math.MinInt64, 9007199254740991}
	rnd := rand.New(rand.NewPCG(1, 2))
	str := func() string { return jsonStrings[rnd.IntN(len(jsonStrings))] }
	tm := func() time.Time { return times[rnd.IntN(len(times))] }
	num := func() int64 { return ints[rnd.IntN(len(ints))] }
	for range 200 {
		page := VersionsOutputBody{NextCursor: str()}
		for range rnd.IntN(5) {
			page.Items = append(page.Items, VersionSummary{
				Version: num(), Action: str(), EntryVersion: num(), RestoredFrom: num(), ChangedAt: tm(),
				ChangedBy: str(), Name: str(), Type: str(), Source: str(), FingerprintSHA256: str(), NotAfter: tm(),
			})
		}
		sameJSON(t, page)
	}

	// The years MarshalJSON refuses are refused here too.
	for _, y := range []int{-1, 10000} {
		bad := time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
		sameJSON(t, VersionsOutputBody{Items: []VersionSummary{{ChangedAt: bad}}})
		sameJSON(t, VersionsOutputBody{Items: []VersionSummary{{NotAfter: bad}}})
	}
}

// FuzzJSONString: a string is written as encoding/json writes it, whatever its bytes.
func FuzzJSONString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sameJSON(t, VersionsOutputBody{Items: []VersionSummary{{Name: s}}, NextCursor: s})
	})
}

// TestOtherBodiesUseHumaJSON: a body that does not write itself is Huma's JSON.
func TestOtherBodiesUseHumaJSON(t *testing.T) {
	t.Parallel()
	sameJSON(t, map[string]any{"a": "<b>", "n": 1})
	sameJSON(t, Version{Name: "x", ChangedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)})
}
