package auth

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maypok86/otter/v2"

	"github.com/loopze/certstore/internal/secret"
)

// ErrUnauthenticated wraps every reason a request carries no acceptable token: none at
// all, malformed, badly signed, expired, wrong issuer or audience, bad claims. The API
// answers 401. The wrapped reason is safe to log; it never contains the token.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrNoToken is wrapped together with ErrUnauthenticated when the request carries no
// token at all, so that the web UI can send the user to log in rather than report an error.
var ErrNoToken = errors.New("no bearer token or session cookie")

// ErrLifetimeTooLong is wrapped together with ErrUnauthenticated when a token's exp lies
// further ahead than the configured maximum lifetime.
var ErrLifetimeTooLong = errors.New("token expires later than the maximum token lifetime allows")

// ErrForbiddenOrigin is returned for a cookie-authenticated unsafe request from a foreign
// origin. The API answers 403.
var ErrForbiddenOrigin = errors.New("cross-origin request refused")

// CookieName is the session cookie carrying the JWT for browser sessions.
const CookieName = "loopze_session"

// How the token reached us, as recorded in Principal.Via.
const (
	ViaBearer = "bearer"
	ViaCookie = "cookie"
)

// leeway absorbs clock skew between the token issuer and us for exp, nbf and iat.
const leeway = 30 * time.Second

// maxTokenLen bounds the work spent on a token; real tokens are well under 2 KiB.
const maxTokenLen = 16 << 10

// Principal is the authenticated caller: who, in which tenant, with which role.
type Principal struct {
	Subject string
	Tenant  string
	Role    Role
	// Via is ViaBearer or ViaCookie; empty when the token was verified outside a request.
	Via string
}

// Config selects the keys and checks a Verifier applies. At least one of HMACSecret and
// PublicKeysFile must be set.
type Config struct {
	// HMACSecret verifies HS256 tokens; nil when only public keys are used.
	HMACSecret secret.Bytes
	// PublicKeysFile is a PEM file of PUBLIC KEY / CERTIFICATE blocks or a JWKS JSON file
	// of RS256, ES256 and EdDSA verification keys; empty when only HS256 is used. It is
	// read once, by NewVerifier.
	PublicKeysFile string
	// Issuer and Audience are required to match the iss and aud claims when non-empty.
	Issuer, Audience string
	// MaxTTL, when positive, is the furthest ahead exp may lie: a token that would stay
	// valid longer is refused, so a leaked long-lived token is no use.
	MaxTTL time.Duration
	// AllowedOrigins lists origins (scheme://host[:port]) besides the request's own host
	// that may make cookie-authenticated writes.
	AllowedOrigins []string
}

// Verifier checks tokens against the configured keys. It is immutable after NewVerifier
// and safe for concurrent use.
type Verifier struct {
	hmac    []byte
	keys    []publicKey
	parser  *jwt.Parser
	origins *http.CrossOriginProtection
	// verified remembers the tokens that passed every check, by their SHA-256, with the
	// time window in which they keep passing: a client sends the same token with every
	// request until it expires, and the checks (signature, strict JSON, claims) cost more
	// than the rest of a cached read. The tokens themselves are not kept.
	verified *otter.Cache[[sha256.Size]byte, verifiedToken]
	now      func() time.Time
	maxTTL   time.Duration
}

// verifiedToken is what a verified token yields and the window in which the checks that
// depend on the time (exp, nbf, iat, with the leeway) keep passing.
type verifiedToken struct {
	p           Principal
	from, until time.Time
}

// verifiedTokens bounds the remembered tokens: far more than the clients of one server.
const verifiedTokens = 10_000

// claims is the token body we accept.
type claims struct {
	jwt.RegisteredClaims
	Tenant string `json:"tenant"`
	Role   string `json:"role"`
}

// NewVerifier loads the public keys file, if any, and builds the algorithm allow-list
// from what is configured: HS256 only with a secret, each asymmetric algorithm only when
// a key for it was loaded. Nothing else, "none" included, is ever accepted.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{}
	var methods []string
	if len(cfg.HMACSecret) > 0 {
		if len(cfg.HMACSecret) < MinHMACSecretLen {
			return nil, fmt.Errorf("new verifier: %w", ErrWeakSecret)
		}
		v.hmac = append([]byte(nil), cfg.HMACSecret...)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if cfg.PublicKeysFile != "" {
		keys, err := loadPublicKeys(cfg.PublicKeysFile)
		if err != nil {
			return nil, fmt.Errorf("new verifier: %w", err)
		}
		v.keys = keys
		for _, alg := range []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()} {
			if v.hasKeyFor(alg) {
				methods = append(methods, alg)
			}
		}
	}
	if len(methods) == 0 {
		return nil, errors.New("new verifier: neither an HS256 secret nor a public keys file is configured")
	}
	v.now = time.Now
	v.maxTTL = cfg.MaxTTL
	opts := []jwt.ParserOption{
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	origins, err := newOriginCheck(cfg.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("new verifier: %w", err)
	}
	v.origins = origins
	v.verified = otter.Must(&otter.Options[[sha256.Size]byte, verifiedToken]{MaximumSize: verifiedTokens})
	return v, nil
}

func (v *Verifier) hasKeyFor(alg string) bool {
	for _, k := range v.keys {
		if k.alg == alg {
			return true
		}
	}
	return false
}

// Verify checks a token's signature and claims and returns its principal (Via empty).
// Every failure wraps ErrUnauthenticated.
func (v *Verifier) Verify(token string) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, ErrNoToken)
	}
	if len(token) > maxTokenLen {
		return Principal{}, fmt.Errorf("%w: token longer than %d bytes", ErrUnauthenticated, maxTokenLen)
	}
	sum := sha256.Sum256([]byte(token))
	now := v.now()
	if t, ok := v.verified.GetIfPresent(sum); ok && !now.Before(t.from) && now.Before(t.until) {
		return t.p, nil
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.key); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	// The signature is good; what jwt read from the claims may still not be what they say.
	if err := strictToken(token); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if v.maxTTL > 0 && c.ExpiresAt.Sub(now) > v.maxTTL+leeway {
		return Principal{}, fmt.Errorf("%w: %w (%s)", ErrUnauthenticated, ErrLifetimeTooLong, v.maxTTL)
	}
	p, err := c.principal()
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	v.verified.Set(sum, c.window(p))
	return p, nil
}

// window is when the time checks of the parser keep passing for c: from the later of nbf
// and iat, less the leeway, until exp plus the leeway (exp is required).
func (c *claims) window(p Principal) verifiedToken {
	t := verifiedToken{p: p, until: c.ExpiresAt.Add(leeway)}
	for _, d := range []*jwt.NumericDate{c.NotBefore, c.IssuedAt} {
		if d != nil && d.Add(-leeway).After(t.from) {
			t.from = d.Add(-leeway)
		}
	}
	return t
}

// principal checks the claims jwt does not know about. Claim values are not echoed in
// errors: they are attacker-controlled and would land in logs.
func (c *claims) principal() (Principal, error) {
	if c.Subject == "" {
		return Principal{}, errors.New("claim sub is missing")
	}
	if !ValidTenant(c.Tenant) {
		return Principal{}, errors.New("claim tenant is missing or not a valid slug")
	}
	role, err := ParseRole(c.Role)
	if err != nil {
		return Principal{}, fmt.Errorf("claim role: %w", err)
	}
	return Principal{Subject: c.Subject, Tenant: c.Tenant, Role: role}, nil
}

// key hands jwt the keys for the token's algorithm, which the parser has already checked
// against the allow-list. The HMAC secret is only ever offered to HS256 and public keys
// only to the one algorithm each is bound to, so no key can be used as another kind.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	// A kid of another JSON type would otherwise read as no kid, and every key be tried.
	if raw, ok := t.Header["kid"]; ok {
		if _, isString := raw.(string); !isString {
			return nil, errors.New("token header kid is not a string")
		}
	}
	alg := t.Method.Alg()
	if alg == jwt.SigningMethodHS256.Alg() {
		return v.hmac, nil
	}
	var matching []publicKey
	for _, k := range v.keys {
		if k.alg == alg {
			matching = append(matching, k)
		}
	}
	// A kid names the key; when none of ours carries it, the token may still be signed by
	// a key from a PEM file, which has no kid, so those are tried. Keys named differently
	// are never tried for a token that names its key.
	if kid, _ := t.Header["kid"].(string); kid != "" {
		var named, unnamed []jwt.VerificationKey
		for _, k := range matching {
			switch k.kid {
			case kid:
				named = append(named, k.key)
			case "":
				unnamed = append(unnamed, k.key)
			}
		}
		if len(named) > 0 {
			return jwt.VerificationKeySet{Keys: named}, nil
		}
		if len(unnamed) == 0 {
			return nil, errors.New("no key with the token's kid")
		}
		return jwt.VerificationKeySet{Keys: unnamed}, nil
	}
	set := jwt.VerificationKeySet{}
	for _, k := range matching {
		set.Keys = append(set.Keys, k.key)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("no key for %s", alg)
	}
	return set, nil
}

// Authenticate extracts the token from the request (an Authorization Bearer header first,
// then the session cookie), verifies it and, for cookie auth on unsafe methods, runs the
// Origin check. Token failures wrap ErrUnauthenticated; a refused origin is
// ErrForbiddenOrigin. Bearer requests need no origin check: browsers never attach a bearer
// header on their own, so a cross-site page cannot forge one.
func (v *Verifier) Authenticate(r *http.Request) (Principal, error) {
	token, via, err := extractToken(r)
	if err != nil {
		return Principal{}, err
	}
	p, err := v.Verify(token)
	if err != nil {
		return Principal{}, err
	}
	p.Via = via
	if via == ViaCookie {
		if err := v.checkOrigin(r); err != nil {
			return Principal{}, err
		}
	}
	return p, nil
}

// extractToken prefers the Authorization header. An Authorization header of another
// scheme (Basic from a proxy in front of us) is not ours and does not hide the cookie; a
// Bearer header with a bad token does, so a request is judged by one token only.
func extractToken(r *http.Request) (token, via string, err error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(rest)
			if token == "" {
				return "", "", fmt.Errorf("%w: empty bearer token", ErrUnauthenticated)
			}
			return token, ViaBearer, nil
		}
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		return c.Value, ViaCookie, nil
	}
	return "", "", fmt.Errorf("%w: %w", ErrUnauthenticated, ErrNoToken)
}

// Mint signs an HS256 token for p with iat and nbf at now and exp at now+ttl; iss and aud
// are set when non-empty. It is what `loopze-certs token` and tests use. p.Via is ignored.
func Mint(hmacSecret []byte, p Principal, ttl time.Duration, issuer, audience string, now time.Time) (string, error) {
	if len(hmacSecret) < MinHMACSecretLen {
		return "", fmt.Errorf("mint token: %w", ErrWeakSecret)
	}
	if p.Subject == "" {
		return "", errors.New("mint token: subject is empty")
	}
	if !ValidTenant(p.Tenant) {
		return "", fmt.Errorf("mint token: tenant %q is not a valid slug", p.Tenant)
	}
	if !p.Role.known() {
		return "", fmt.Errorf("mint token: %w: %s", ErrUnknownRole, p.Role)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("mint token: ttl %s is not positive", ttl)
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   p.Subject,
			Issuer:    issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Tenant: p.Tenant,
		Role:   p.Role.String(),
	}
	if audience != "" {
		c.Audience = jwt.ClaimStrings{audience}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(hmacSecret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}
