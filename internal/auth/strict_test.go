package auth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// signRaw signs header and claims exactly as written, so a test can send what no JSON
// encoder would produce: repeated names, names in other cases, strings for numbers.
func signRaw(t *testing.T, header, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc([]byte(header)) + "." + enc([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(signing, testSecret)
	require.NoError(t, err)
	return signing + "." + enc(sig)
}

// TestClaimsAreDecodedStrictly: every token of the table is correctly signed with
// the server's secret, so only the strict reading of its header and claims can refuse it.
func TestClaimsAreDecodedStrictly(t *testing.T) {
	t.Parallel()
	now := time.Now()
	exp, iat := now.Add(time.Hour).Unix(), now.Unix()
	base := fmt.Sprintf(`"sub":"alice","iat":%d,"exp":%d`, iat, exp)
	const hs = `{"alg":"HS256","typ":"JWT"}`
	v := newVerifier(t, Config{HMACSecret: testSecret, Issuer: "https://idp.example"})
	good := base + `,"iss":"https://idp.example"`

	cases := []struct {
		name, header, claims string
		want                 string // "" accepts; else a word of the refusal
	}{
		{"plain", hs, `{` + good + `,"tenant":"acme","role":"viewer"}`, ""},
		{"unknown claims are fine", hs, `{` + good + `,"tenant":"acme","role":"viewer","groups":["a","b"],"x":{"y":1}}`, ""},
		{"escaped name is the same name", hs, `{` + good + `,"ten\u0061nt":"acme","role":"viewer"}`, ""},
		{"tenant and role again in capitals", hs, `{` + good + `,"tenant":"acme","role":"viewer","TENANT":"globex","ROLE":"admin"}`, "another case"},
		{"capitals alone", hs, `{` + good + `,"TENANT":"globex","Role":"admin"}`, "another case"},
		{"issuer twice in two cases", hs, `{` + base + `,"iss":"https://evil","ISS":"https://idp.example","tenant":"acme","role":"viewer"}`, "another case"},
		{"issuer by Unicode folding", hs, `{` + base + `,"iss":"https://evil","iſs":"https://idp.example","tenant":"acme","role":"viewer"}`, "another case"},
		{"role twice", hs, `{` + good + `,"tenant":"acme","role":"viewer","role":"admin"}`, "role is given twice"},
		{"tenant twice via an escape", hs, `{` + good + `,"tenant":"acme","ten\u0061nt":"globex","role":"viewer"}`, "tenant is given twice"},
		{"unknown name twice", hs, `{` + good + `,"tenant":"acme","role":"viewer","x":1,"x":2}`, "twice"},
		{"nested name twice", hs, `{` + good + `,"tenant":"acme","role":"viewer","x":[{"a":1,"a":2}]}`, "twice"},
		{"exp as a string", hs, fmt.Sprintf(`{"sub":"alice","iat":%d,"exp":"%d","iss":"https://idp.example","tenant":"acme","role":"viewer"}`, iat, exp), "exp"},
		{"iat as a string", hs, fmt.Sprintf(`{"sub":"alice","iat":"%d","exp":%d,"iss":"https://idp.example","tenant":"acme","role":"viewer"}`, iat, exp), "iat"},
		{"nbf as a string", hs, `{` + good + fmt.Sprintf(`,"nbf":"%d","tenant":"acme","role":"viewer"}`, iat), "nbf"},
		{"exp null", hs, fmt.Sprintf(`{"sub":"alice","iat":%d,"exp":null,"iss":"https://idp.example","tenant":"acme","role":"viewer"}`, iat), "exp"},
		{"crit header", `{"alg":"HS256","typ":"JWT","crit":["exp"],"exp":1}`, `{` + good + `,"tenant":"acme","role":"viewer"}`, "crit"},
		{"empty crit header", `{"alg":"HS256","crit":[]}`, `{` + good + `,"tenant":"acme","role":"viewer"}`, "crit"},
		{"header name twice", `{"alg":"HS256","alg":"HS256"}`, `{` + good + `,"tenant":"acme","role":"viewer"}`, "twice"},
		{"deep nesting", hs, `{` + good + `,"tenant":"acme","role":"viewer","x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, "nested"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok := signRaw(t, tc.header, tc.claims)
			p, err := v.Verify(tok)
			if tc.want == "" {
				require.NoError(t, err)
				require.Equal(t, Principal{Subject: "alice", Tenant: "acme", Role: Viewer}, p)
				return
			}
			require.ErrorIs(t, err, ErrUnauthenticated)
			require.Contains(t, err.Error(), tc.want)
			require.Equal(t, Principal{}, p)
			for _, leak := range []string{"globex", "evil", "ſ"} {
				require.NotContains(t, err.Error(), leak, "claim values are not echoed")
			}
		})
	}
}

// TestStrictTokenStructure covers strictToken on its own: what a signed token could still
// carry that is not one JSON object per segment.
func TestStrictTokenStructure(t *testing.T) {
	t.Parallel()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	obj := enc(`{"a":1}`)
	for name, tok := range map[string]string{
		"two segments":          obj + "." + obj,
		"padded":                obj + "=." + obj + ".x",
		"array claims":          obj + "." + enc(`[1]`) + ".x",
		"trailing data":         obj + "." + enc(`{"a":1} {}`) + ".x",
		"broken JSON":           obj + "." + enc(`{"a":}`) + ".x",
		"non-string member key": obj + "." + enc(`{1:2}`) + ".x",
	} {
		require.Error(t, strictToken(tok), name)
	}
	require.NoError(t, strictToken(obj+"."+obj+".sig"))
}

// FuzzStrictClaims signs arbitrary claims with the server's secret: whatever is accepted
// must say exactly what a plain reading of the JSON says, with no second spelling of a
// claim the principal came from.
func FuzzStrictClaims(f *testing.F) {
	exp := time.Now().Add(time.Hour).Unix()
	f.Add(fmt.Sprintf(`{"sub":"a","tenant":"acme","role":"viewer","exp":%d}`, exp))
	f.Add(fmt.Sprintf(`{"sub":"a","tenant":"acme","role":"viewer","TENANT":"globex","ROLE":"admin","exp":%d}`, exp))
	f.Add(fmt.Sprintf(`{"sub":"a","tenant":"acme","role":"viewer","role":"admin","exp":"%d"}`, exp))
	f.Add(fmt.Sprintf(`{"sub":"a","ten\u0061nt":"acme","role":"editor","exp":%d,"x":[{"y":null}]}`, exp))
	v, err := NewVerifier(Config{HMACSecret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, claims string) {
		enc := base64.RawURLEncoding.EncodeToString
		signing := enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(claims))
		sig, err := jwt.SigningMethodHS256.Sign(signing, testSecret)
		require.NoError(t, err)
		p, err := v.Verify(signing + "." + enc(sig))
		if err != nil {
			require.ErrorIs(t, err, ErrUnauthenticated)
			return
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(claims), &m))
		require.Equal(t, p.Tenant, m["tenant"])
		require.Equal(t, p.Role.String(), m["role"])
		require.Equal(t, p.Subject, m["sub"])
		require.IsType(t, float64(0), m["exp"])
		for name := range m {
			for _, known := range knownClaims {
				require.False(t, name != known && strings.EqualFold(name, known), "%q accepted beside %q", name, known)
			}
		}
	})
}
