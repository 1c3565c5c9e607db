package auth

import (
	"bytes"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

func TestVerifyHS256(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := newVerifier(t, Config{HMACSecret: testSecret, Issuer: "https://idp.example", Audience: "loopze"})
	base := func(role string) jwt.MapClaims {
		c := claimsFor(role, now)
		c["iss"], c["aud"] = "https://idp.example", "loopze"
		return c
	}
	with := func(c jwt.MapClaims, edit func(jwt.MapClaims)) jwt.MapClaims {
		c = maps.Clone(c)
		edit(c)
		return c
	}
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, "", c) }
	otherSecret := bytes.Repeat([]byte("x"), 32)

	for _, tc := range []struct {
		name   string
		token  string
		want   Role // RoleNone: must be refused
		reason string
	}{
		{"viewer", hs(base("viewer")), Viewer, ""},
		{"editor", hs(base("editor")), Editor, ""},
		{"admin", hs(base("admin")), Admin, ""},
		{"audience list containing ours", hs(with(base("viewer"), func(c jwt.MapClaims) { c["aud"] = []string{"other", "loopze"} })), Viewer, ""},
		{"expired within leeway", hs(with(base("viewer"), func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() })), Viewer, ""},
		{"kid ignored for HS256", sign(t, jwt.SigningMethodHS256, testSecret, "whatever", base("viewer")), Viewer, ""},
		{"expired", hs(with(base("viewer"), func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), RoleNone, "expired"},
		{"missing exp", hs(with(base("admin"), func(c jwt.MapClaims) { delete(c, "exp") })), RoleNone, "exp claim is required"},
		{"not yet valid", hs(with(base("viewer"), func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() })), RoleNone, "not valid yet"},
		{"issued in the future", hs(with(base("viewer"), func(c jwt.MapClaims) { c["iat"] = now.Add(time.Minute).Unix() })), RoleNone, "used before issued"},
		{"bad signature", sign(t, jwt.SigningMethodHS256, otherSecret, "", base("admin")), RoleNone, "signature"},
		{"tampered payload", tamper(t, hs(base("viewer")), base("admin")), RoleNone, "signature"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", base("admin")), RoleNone, "signing method"},
		{"HS512", sign(t, jwt.SigningMethodHS512, testSecret, "", base("admin")), RoleNone, "signing method"},
		{"wrong issuer", hs(with(base("viewer"), func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), RoleNone, "iss"},
		{"missing issuer", hs(with(base("viewer"), func(c jwt.MapClaims) { delete(c, "iss") })), RoleNone, "iss"},
		{"wrong audience", hs(with(base("viewer"), func(c jwt.MapClaims) { c["aud"] = "other" })), RoleNone, "aud"},
		{"missing audience", hs(with(base("viewer"), func(c jwt.MapClaims) { delete(c, "aud") })), RoleNone, "aud"},
		{"bad tenant slug", hs(with(base("viewer"), func(c jwt.MapClaims) { c["tenant"] = "../acme" })), RoleNone, "tenant"},
		{"upper-case tenant", hs(with(base("viewer"), func(c jwt.MapClaims) { c["tenant"] = "Acme" })), RoleNone, "tenant"},
		{"missing tenant", hs(with(base("viewer"), func(c jwt.MapClaims) { delete(c, "tenant") })), RoleNone, "tenant"},
		{"unknown role", hs(base("root")), RoleNone, "role"},
		{"role none", hs(base("none")), RoleNone, "role"},
		{"missing sub", hs(with(base("viewer"), func(c jwt.MapClaims) { delete(c, "sub") })), RoleNone, "sub"},
		{"garbage", "not.a.jwt", RoleNone, "malformed"},
		{"empty", "", RoleNone, "no bearer token"},
		{"too long", strings.Repeat("a", maxTokenLen+1), RoleNone, "longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := v.Verify(tc.token)
			if tc.want == RoleNone {
				require.ErrorIs(t, err, ErrUnauthenticated)
				require.Contains(t, err.Error(), tc.reason)
				require.Equal(t, Principal{}, p)
				return
			}
			require.NoError(t, err)
			require.Equal(t, Principal{Subject: "alice", Tenant: "acme", Role: tc.want}, p)
		})
	}
}

// tamper swaps a token's payload for another claim set, keeping header and signature.
func tamper(t *testing.T, token string, c jwt.MapClaims) string {
	t.Helper()
	other := sign(t, jwt.SigningMethodHS256, bytes.Repeat([]byte("y"), 32), "", c)
	parts, otherParts := strings.Split(token, "."), strings.Split(other, ".")
	return parts[0] + "." + otherParts[1] + "." + parts[2]
}

func TestMintRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := newVerifier(t, Config{HMACSecret: testSecret, Issuer: "loopze", Audience: "api"})
	for _, role := range []Role{Viewer, Editor, Admin} {
		p := Principal{Subject: "bot", Tenant: "default", Role: role, Via: ViaCookie}
		tok, err := Mint(testSecret, p, time.Hour, "loopze", "api", now)
		require.NoError(t, err)
		got, err := v.Verify(tok)
		require.NoError(t, err)
		p.Via = ""
		require.Equal(t, p, got)
	}

	// Minted without iss/aud, the token fails a verifier that requires them.
	tok, err := Mint(testSecret, Principal{Subject: "bot", Tenant: "default", Role: Admin}, time.Hour, "", "", now)
	require.NoError(t, err)
	_, err = v.Verify(tok)
	require.ErrorIs(t, err, ErrUnauthenticated)

	// Minted long ago with a short ttl, it has expired.
	tok, err = Mint(testSecret, Principal{Subject: "bot", Tenant: "default", Role: Admin}, time.Minute, "loopze", "api", now.Add(-time.Hour))
	require.NoError(t, err)
	_, err = v.Verify(tok)
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.ErrorIs(t, err, jwt.ErrTokenExpired)
}

func TestMintRefuses(t *testing.T) {
	t.Parallel()
	ok := Principal{Subject: "bot", Tenant: "default", Role: Viewer}
	for _, tc := range []struct {
		name   string
		secret []byte
		edit   func(*Principal)
		ttl    time.Duration
	}{
		{"short secret", testSecret[:31], func(*Principal) {}, time.Hour},
		{"no subject", testSecret, func(p *Principal) { p.Subject = "" }, time.Hour},
		{"bad tenant", testSecret, func(p *Principal) { p.Tenant = "A/B" }, time.Hour},
		{"no role", testSecret, func(p *Principal) { p.Role = RoleNone }, time.Hour},
		{"out-of-range role", testSecret, func(p *Principal) { p.Role = Admin + 1 }, time.Hour},
		{"zero ttl", testSecret, func(*Principal) {}, 0},
	} {
		p := ok
		tc.edit(&p)
		_, err := Mint(tc.secret, p, tc.ttl, "", "", time.Now())
		require.Error(t, err, tc.name)
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"nothing configured", Config{}},
		{"short secret", Config{HMACSecret: testSecret[:16]}},
		{"missing keys file", Config{PublicKeysFile: "/nonexistent/keys.pem"}},
		{"wildcard origin", Config{HMACSecret: testSecret, AllowedOrigins: []string{"*"}}},
		{"origin with path", Config{HMACSecret: testSecret, AllowedOrigins: []string{"https://ui.example/app"}}},
		{"origin without scheme", Config{HMACSecret: testSecret, AllowedOrigins: []string{"ui.example"}}},
		{"ftp origin", Config{HMACSecret: testSecret, AllowedOrigins: []string{"ftp://ui.example"}}},
	} {
		_, err := NewVerifier(tc.cfg)
		require.Error(t, err, tc.name)
	}
}

// An HS256 token whose "secret" is the RSA public key's PEM (which an attacker has) must
// not pass, whether or not an HS256 secret is configured alongside.
func TestAlgorithmConfusionRefused(t *testing.T) {
	t.Parallel()
	k := key("rsa-a")
	pubPEM := publicPEM(t, k.public())
	keysFile := writeTemp(t, "keys.pem", pubPEM)
	forged := sign(t, jwt.SigningMethodHS256, pubPEM, "", claimsFor("admin", time.Now()))
	legit := signWith(t, k, "", claimsFor("admin", time.Now()))

	for _, cfg := range []Config{
		{PublicKeysFile: keysFile},
		{PublicKeysFile: keysFile, HMACSecret: testSecret},
	} {
		v := newVerifier(t, cfg)
		_, err := v.Verify(forged)
		require.ErrorIs(t, err, ErrUnauthenticated)
		p, err := v.Verify(legit)
		require.NoError(t, err)
		require.Equal(t, Admin, p.Role)
	}

	// With only RS256 configured, HS256 is not even on the allow-list.
	_, err := newVerifier(t, Config{PublicKeysFile: keysFile}).Verify(forged)
	require.ErrorIs(t, err, jwt.ErrTokenSignatureInvalid)
	require.Contains(t, err.Error(), "signing method HS256 is invalid")
}

func TestPublicKeyAlgorithms(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, alg := range []string{"rsa", "ec", "ed"} {
		signer, other := key(alg+"-a"), key(alg+"-b")
		files := map[string][]byte{
			"pem public key":  publicPEM(t, signer.public()),
			"pem certificate": certificatePEM(t, signer.signer),
			"jwks":            jwksJSON(t, jwkOf(t, "k1", signer.public())),
		}
		for format, data := range files {
			t.Run(alg+"/"+format, func(t *testing.T) {
				t.Parallel()
				v := newVerifier(t, Config{PublicKeysFile: writeTemp(t, "keys", data)})

				p, err := v.Verify(signWith(t, signer, "", claimsFor("editor", now)))
				require.NoError(t, err)
				require.Equal(t, Principal{Subject: "alice", Tenant: "acme", Role: Editor}, p)

				_, err = v.Verify(signWith(t, other, "", claimsFor("editor", now)))
				require.ErrorIs(t, err, ErrUnauthenticated, "a key of the same type that is not configured")

				_, err = v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, "", claimsFor("editor", now)))
				require.ErrorIs(t, err, ErrUnauthenticated, "HS256 without a configured secret")

				c := claimsFor("editor", now)
				delete(c, "exp")
				_, err = v.Verify(signWith(t, signer, "", c))
				require.ErrorIs(t, err, ErrUnauthenticated, "missing exp")
			})
		}
	}
}

// Only algorithms with a configured key are accepted: an ES256 token is refused by a
// verifier holding only RSA keys, even though ES256 is a supported algorithm.
func TestAllowListFollowsConfiguredKeys(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{PublicKeysFile: writeTemp(t, "k.pem", publicPEM(t, key("rsa-a").public()))})
	_, err := v.Verify(signWith(t, key("ec-a"), "", claimsFor("viewer", time.Now())))
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.Contains(t, err.Error(), "signing method ES256 is invalid")
}

func TestMixedKeysFile(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var pemFile []byte
	for _, n := range []string{"rsa-a", "ec-a", "ed-a"} {
		pemFile = append(pemFile, publicPEM(t, key(n).public())...)
	}
	v := newVerifier(t, Config{PublicKeysFile: writeTemp(t, "k.pem", pemFile), HMACSecret: testSecret})
	for _, n := range []string{"rsa-a", "ec-a", "ed-a"} {
		_, err := v.Verify(signWith(t, key(n), "", claimsFor("viewer", now)))
		require.NoError(t, err, n)
	}
	_, err := v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, "", claimsFor("viewer", now)))
	require.NoError(t, err)
}

func TestKidSelection(t *testing.T) {
	t.Parallel()
	now := time.Now()
	a, b := key("rsa-a"), key("rsa-b")
	named := newVerifier(t, Config{PublicKeysFile: writeTemp(t, "jwks.json",
		jwksJSON(t, jwkOf(t, "a", a.public()), jwkOf(t, "b", b.public())))})
	unnamed := newVerifier(t, Config{PublicKeysFile: writeTemp(t, "k.pem",
		append(publicPEM(t, a.public()), publicPEM(t, b.public())...))})
	mixed := newVerifier(t, Config{PublicKeysFile: writeTemp(t, "jwks.json",
		jwksJSON(t, jwkOf(t, "a", a.public()), jwkOf(t, "", b.public())))})

	for _, tc := range []struct {
		name string
		v    *Verifier
		key  testKey
		kid  string
		ok   bool
	}{
		{"kid names the signing key", named, b, "b", true},
		{"kid names the other key", named, b, "a", false},
		{"no kid tries each key", named, b, "", true},
		{"unknown kid, all keys named", named, b, "c", false},
		{"kid with PEM keys tries each", unnamed, b, "anything", true},
		{"unknown kid falls back to unnamed keys", mixed, b, "c", true},
		{"kid naming another key does not fall back", mixed, b, "a", false},
	} {
		_, err := tc.v.Verify(signWith(t, tc.key, tc.kid, claimsFor("viewer", now)))
		if tc.ok {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, ErrUnauthenticated, tc.name)
		}
	}
}

// Error strings are logged; they must never carry the token, nor any of its parts.
func TestErrorsNeverContainToken(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := newVerifier(t, Config{HMACSecret: testSecret, Issuer: "i", Audience: "a"})
	valid := sign(t, jwt.SigningMethodHS256, testSecret, "", claimsFor("admin", now))
	parts := strings.Split(valid, ".")
	expired := claimsFor("admin", now)
	expired["exp"] = now.Add(-time.Hour).Unix()
	tokens := []string{
		valid, // wrong iss/aud for this verifier
		sign(t, jwt.SigningMethodHS256, bytes.Repeat([]byte("z"), 32), "", claimsFor("admin", now)),
		sign(t, jwt.SigningMethodHS256, testSecret, "", expired),
		sign(t, jwt.SigningMethodHS256, testSecret, "", claimsFor("sup3r-s3cret-r0le-value", now)),
		parts[0] + "." + parts[1],
		parts[0] + ".!!!" + parts[1] + "." + parts[2],
		"Bearer " + valid,
		valid + "." + parts[2],
	}
	for _, tok := range tokens {
		_, err := v.Verify(tok)
		require.ErrorIs(t, err, ErrUnauthenticated)
		msg := err.Error()
		require.NotContains(t, msg, tok)
		for _, part := range strings.Split(tok, ".") {
			if len(part) >= 8 {
				require.NotContains(t, msg, part)
			}
		}
		require.NotContains(t, msg, "sup3r")
	}
}

func FuzzVerify(f *testing.F) {
	now := time.Now()
	valid, err := Mint(testSecret, Principal{Subject: "s", Tenant: "t", Role: Admin}, time.Hour, "", "", now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v, err := NewVerifier(Config{HMACSecret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := v.Verify(tok)
		if err != nil {
			require.ErrorIs(t, err, ErrUnauthenticated)
			require.Equal(t, Principal{}, p)
			if len(tok) >= 16 {
				require.NotContains(t, err.Error(), tok)
			}
			return
		}
		require.True(t, ValidTenant(p.Tenant))
		require.True(t, p.Role.Allows(Viewer))
		require.NotEmpty(t, p.Subject)
	})
}

// TestVerifiedTokensKeepTheirTimeChecks: a token verified once is answered from memory,
// but only inside the window its exp, nbf and iat (with the leeway) allow: it is refused
// once expired, and a token not valid yet is refused until it is.
func TestVerifiedTokensKeepTheirTimeChecks(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := newVerifier(t, Config{HMACSecret: testSecret})
	clock := now
	v.now = func() time.Time { return clock }

	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claimsFor("editor", now))
	for range 2 { // the second answer is the remembered one
		p, err := v.Verify(tok)
		require.NoError(t, err)
		require.Equal(t, Editor, p.Role)
	}
	require.Equal(t, 1, v.verified.EstimatedSize())
	clock = now.Add(time.Hour + leeway - time.Second)
	_, err := v.Verify(tok)
	require.NoError(t, err)
	clock = now.Add(time.Hour + leeway + time.Second)
	_, err = v.Verify(tok)
	require.ErrorIs(t, err, ErrUnauthenticated)

	later := claimsFor("viewer", now)
	later["nbf"] = now.Add(10 * time.Minute).Unix()
	tok = sign(t, jwt.SigningMethodHS256, testSecret, "", later)
	clock = now
	_, err = v.Verify(tok)
	require.ErrorIs(t, err, ErrUnauthenticated)
	clock = now.Add(10*time.Minute - leeway + time.Second)
	_, err = v.Verify(tok)
	require.NoError(t, err)
	clock = now.Add(-time.Minute) // a clock stepped back: before nbf again
	_, err = v.Verify(tok)
	require.ErrorIs(t, err, ErrUnauthenticated)

	// A refused token is never remembered as good.
	bad := sign(t, jwt.SigningMethodHS256, bytes.Repeat([]byte("y"), 32), "", claimsFor("admin", now))
	clock = now
	for range 2 {
		_, err = v.Verify(bad)
		require.ErrorIs(t, err, ErrUnauthenticated)
	}
}

// TestKidMustBeAString: a kid of another JSON type names no key; it is refused rather
// than read as absent, which would try every key.
func TestKidMustBeAString(t *testing.T) {
	t.Parallel()
	now := time.Now()
	b := key("rsa-b")
	v := newVerifier(t, Config{HMACSecret: testSecret, PublicKeysFile: writeTemp(t, "jwks.json",
		jwksJSON(t, jwkOf(t, "a", key("rsa-a").public()), jwkOf(t, "b", b.public())))})
	for _, kid := range []any{42, true, []string{"b"}, map[string]any{"id": "b"}, nil} {
		tok := jwt.NewWithClaims(b.method, claimsFor("viewer", now))
		tok.Header["kid"] = kid
		s, err := tok.SignedString(b.signer)
		require.NoError(t, err)
		_, err = v.Verify(s)
		require.ErrorIs(t, err, ErrUnauthenticated, "kid %#v", kid)
		require.ErrorContains(t, err, "kid is not a string", "kid %#v", kid)

		tok = jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor("viewer", now))
		tok.Header["kid"] = kid
		s, err = tok.SignedString(testSecret)
		require.NoError(t, err)
		_, err = v.Verify(s)
		require.ErrorIs(t, err, ErrUnauthenticated, "HS256, kid %#v", kid)
	}
	_, err := v.Verify(signWith(t, b, "b", claimsFor("viewer", now)))
	require.NoError(t, err, "a string kid still selects its key")
}

// TestMaxTTL: a token whose exp lies further ahead than MaxTTL is refused, however well
// signed; one within it (and the leeway) passes.
func TestMaxTTL(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := newVerifier(t, Config{HMACSecret: testSecret, MaxTTL: 744 * time.Hour})
	for _, tc := range []struct {
		name string
		exp  time.Duration
		ok   bool
	}{
		{"one hour", time.Hour, true},
		{"720h runtime token", 720 * time.Hour, true},
		{"exactly the maximum", 744 * time.Hour, true},
		{"a day over", 768 * time.Hour, false},
		{"a century", 100 * 365 * 24 * time.Hour, false},
	} {
		c := claimsFor("runtime", now)
		c["exp"] = now.Add(tc.exp).Unix()
		_, err := v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, "", c))
		if tc.ok {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, ErrLifetimeTooLong, tc.name)
			require.ErrorIs(t, err, ErrUnauthenticated, tc.name)
		}
	}
	unlimited := newVerifier(t, Config{HMACSecret: testSecret})
	c := claimsFor("viewer", now)
	c["exp"] = now.Add(100 * 365 * 24 * time.Hour).Unix()
	_, err := unlimited.Verify(sign(t, jwt.SigningMethodHS256, testSecret, "", c))
	require.NoError(t, err, "no MaxTTL, no bound")
}
