package api_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/auth"
)

// TestLenientClaimsAreRefusedOverHTTP sends the attacking tokens, correctly signed, to the
// API over a real database: a viewer of acme who repeats tenant and role in capitals was
// served as an admin of globex; a second, capitalised iss passed the issuer check.
func TestLenientClaimsAreRefusedOverHTTP(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	secret := []byte("claims-test-hmac-secret-0123456789abcdef")
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret, Issuer: "https://idp.example"})
	require.NoError(t, err)
	srv := api.New(api.Deps{Logger: env.Logger, Pool: env.Pool, Version: "test", Verifier: v, Catalog: env.Catalog, Workspace: env.Workspace})
	hs := httptest.NewServer(srv.Handler)
	t.Cleanup(hs.Close)

	signRaw := func(claims string) string {
		enc := base64.RawURLEncoding.EncodeToString
		signing := enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(claims))
		sig, err := jwt.SigningMethodHS256.Sign(signing, secret)
		require.NoError(t, err)
		return signing + "." + enc(sig)
	}
	call := func(tok string) int {
		req, err := http.NewRequest(http.MethodDelete, hs.URL+"/api/v1/certs/anything", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res.StatusCode
	}
	times := fmt.Sprintf(`"sub":"mallory","iat":%d,"exp":%d`, time.Now().Unix(), time.Now().Add(time.Hour).Unix())

	// The same claims without the tricks: a viewer may not delete, an admin reaches the 404.
	require.Equal(t, http.StatusForbidden, call(signRaw(`{`+times+`,"iss":"https://idp.example","tenant":"acme","role":"viewer"}`)))
	require.Equal(t, http.StatusNotFound, call(signRaw(`{`+times+`,"iss":"https://idp.example","tenant":"globex","role":"admin"}`)))

	for name, claims := range map[string]string{
		"tenant and role repeated in capitals": `{` + times + `,"iss":"https://idp.example","tenant":"acme","role":"viewer","TENANT":"globex","ROLE":"admin"}`,
		"issuer repeated in capitals":          `{` + times + `,"iss":"https://evil","ISS":"https://idp.example","tenant":"globex","role":"admin"}`,
		"exp as a string":                      fmt.Sprintf(`{"sub":"mallory","exp":"%d","iss":"https://idp.example","tenant":"globex","role":"admin"}`, time.Now().Add(time.Hour).Unix()),
	} {
		require.Equal(t, http.StatusUnauthorized, call(signRaw(claims)), name)
	}
}
