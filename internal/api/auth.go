package api

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/auth"
)

// Security scheme names in the OpenAPI document.
const (
	schemeBearer = "bearerAuth"
	schemeCookie = "cookieAuth"
)

// metaRole is the operation metadata key holding the minimum role.
const metaRole = "loopze-min-role"

type principalKey struct{}

// principalFrom returns the caller authenticated by the middleware.
func principalFrom(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return p
}

// secured decorates an operation with the security requirement and minimum role.
func secured(op huma.Operation, min auth.Role) huma.Operation {
	op.Security = []map[string][]string{{schemeBearer: {}}, {schemeCookie: {}}}
	if op.Metadata == nil {
		op.Metadata = map[string]any{}
	}
	op.Metadata[metaRole] = min
	op.Errors = append([]int{http.StatusUnauthorized, http.StatusForbidden}, op.Errors...)
	op.Description = op.Description + "\n\nRequires the **" + min.String() + "** role or higher."
	return op
}

func addSecuritySchemes(api huma.API) {
	o := api.OpenAPI()
	if o.Components.SecuritySchemes == nil {
		o.Components.SecuritySchemes = map[string]*huma.SecurityScheme{}
	}
	o.Components.SecuritySchemes[schemeBearer] = &huma.SecurityScheme{
		Type: "http", Scheme: "bearer", BearerFormat: "JWT",
		Description: "A JWT with the claims sub, tenant, role (viewer, editor, admin) and exp; `loopze-certs token` prints one. " +
			"Verified as RFC8725 advises: only the algorithms of the configured keys are accepted (HS256, RS256, ES256, EdDSA; never none), exp is required, iss and aud are checked when configured.",
	}
	o.Components.SecuritySchemes[schemeCookie] = &huma.SecurityScheme{
		Type: "apiKey", In: "cookie", Name: auth.CookieName,
		Description: "The same JWT in the web UI's session cookie. Unsafe requests from a foreign Origin are refused.",
	}
}

// authMiddleware authenticates every operation that declares a minimum role: 401 without a
// valid token, 403 below the role or for a cross-origin cookie write.
func (s *Server) authMiddleware(api huma.API) func(huma.Context, func(huma.Context)) {
	return func(ctx huma.Context, next func(huma.Context)) {
		min, ok := ctx.Operation().Metadata[metaRole].(auth.Role)
		if !ok {
			next(ctx)
			return
		}
		// Whatever an authenticated operation answers is the tenant's data or a verdict on
		// a token: no browser or proxy cache may keep it.
		ctx.SetHeader("Cache-Control", "no-store")
		if s.deps.Verifier == nil {
			_ = huma.WriteErr(api, ctx, http.StatusServiceUnavailable, "authentication is not configured")
			return
		}
		r, _ := humago.Unwrap(ctx)
		p, err := s.deps.Verifier.Authenticate(r)
		switch {
		case errors.Is(err, auth.ErrForbiddenOrigin):
			_ = huma.WriteErr(api, ctx, http.StatusForbidden, "cross-origin request refused: cookie-authenticated writes must come from this site")
			return
		case err != nil:
			s.deps.Logger.Debug("authentication failed", "request_id", RequestID(ctx.Context()), "reason", err)
			ctx.SetHeader("WWW-Authenticate", `Bearer realm="loopze"`)
			_ = huma.WriteErr(api, ctx, http.StatusUnauthorized, "a valid token is required (Authorization: Bearer <JWT> or the "+auth.CookieName+" cookie)")
			return
		}
		// The role is checked before the tenant's bucket is touched: a token refused here
		// (a runtime token sent anywhere but its one route, say) spends only its own
		// subject's bucket, never what the tenant's other users share.
		allowed := p.Role.Allows(min)
		if s.limiter != nil && !s.limiter.allow(ctx.SetHeader, p.Tenant, p.Subject, allowed) {
			_ = huma.WriteErr(api, ctx, http.StatusTooManyRequests, "too many requests from this tenant or token subject; retry after the seconds in Retry-After")
			return
		}
		if !allowed {
			_ = huma.WriteErr(api, ctx, http.StatusForbidden, "this operation needs the "+min.String()+" role; the token has "+p.Role.String())
			return
		}
		ctx = huma.WithValue(ctx, principalKey{}, p)
		next(huma.WithContext(ctx, audit.WithActor(ctx.Context(), actorOf(ctx.Context(), r, p))))
	}
}

// actorOf is who the audit trail records for an authenticated request.
func actorOf(ctx context.Context, r *http.Request, p auth.Principal) audit.Actor {
	addr := r.RemoteAddr
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	return audit.Actor{Subject: p.Subject, Role: p.Role.String(), RequestID: RequestID(ctx), ClientAddr: addr}
}
