package api

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/repo"
)

// AuditRecord is a record of the audit trail as the API shows it: an audit.Link under the
// glossary's name, which is also its OpenAPI schema's.
type AuditRecord audit.Link

// AuditOutput is a page of the tenant's audit trail, newest first.
type AuditOutput struct {
	Body struct {
		Items      []AuditRecord `json:"items"`
		NextCursor string        `json:"nextCursor,omitempty" doc:"Pass as cursor for the next (older) page; absent on the last page"`
	}
}

// AuditInput are the audit listing's query parameters.
type AuditInput struct {
	Action  string `query:"action" maxLength:"64" doc:"Only records of this action: entry.create, entry.update, entry.delete, entry.restore, entry.delete.refused, workspace.deploy, workspace.deploy.refused, node.credentials, tenant.import, key.rotate"`
	Target  string `query:"target" maxLength:"200" doc:"Only records about this target, e.g. entry:internal-root-ca, workspace, node:tcp-out-3, tenant"`
	Subject string `query:"subject" maxLength:"200" doc:"Only records made by this subject"`
	Since   string `query:"since" maxLength:"64" doc:"Only records at or after this RFC 3339 time" example:"2026-01-01T00:00:00Z"`
	Until   string `query:"until" maxLength:"64" doc:"Only records before this RFC 3339 time"`
	Limit   int    `query:"limit" default:"100" minimum:"1" maximum:"1000" doc:"Page size"`
	Cursor  string `query:"cursor" maxLength:"200" doc:"nextCursor of the previous page"`
}

// filter checks the query and turns it into a repository filter, naming the first bad
// parameter in a 400.
func (in *AuditInput) filter() (repo.AuditFilter, error) {
	f := repo.AuditFilter{Action: in.Action, Target: in.Target, Subject: in.Subject, Limit: in.Limit}
	bad := func(loc, msg string) error {
		return newError(http.StatusBadRequest, "invalid audit query", &ErrorDetail{Location: loc, Message: msg})
	}
	if f.Action != "" && !slices.Contains(audit.Actions, f.Action) {
		return f, bad("query.action", "must be one of "+strings.Join(audit.Actions, ", "))
	}
	for _, p := range []struct {
		loc, v string
		dst    **time.Time
	}{{"query.since", in.Since, &f.Since}, {"query.until", in.Until, &f.Until}} {
		if p.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, p.v)
		if err != nil || t.Year() < 1 || t.Year() > 9999 {
			return f, bad(p.loc, "must be an RFC 3339 time, like 2026-01-02T15:04:05Z")
		}
		*p.dst = &t
	}
	if f.Since != nil && f.Until != nil && !f.Since.Before(*f.Until) {
		return f, bad("query.until", "must be later than since")
	}
	for _, s := range []string{f.Target, f.Subject} {
		if !storable(s) {
			return f, bad("query", "filters must be UTF-8 text without NUL characters")
		}
	}
	if in.Cursor != "" {
		if err := decodeCursor(in.Cursor, &f.Before); err != nil {
			return f, err
		}
		if f.Before < 1 {
			return f, decodeCursor("!", &f.Before)
		}
	}
	return f, nil
}

func registerAudit(api huma.API, s *Server) {
	huma.Register(api, secured(huma.Operation{
		OperationID: "listAudit", Method: http.MethodGet, Path: "/api/v1/audit", Tags: []string{"audit"},
		Summary: "List the tenant's audit trail",
		Description: "Every write of the tenant (and every refused delete or deploy), newest first, with filters and cursor pagination. " +
			"Records form a chain per tenant, keyed by the tenant's audit key (see docs/audit.md); they never hold PEM, keys or credential values.",
		Errors: []int{http.StatusBadRequest},
	}, auth.Admin), func(ctx context.Context, in *AuditInput) (*AuditOutput, error) {
		f, err := in.filter()
		if err != nil {
			return nil, err
		}
		recs, more, err := s.audit().List(ctx, principalFrom(ctx).Tenant, f)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		out := &AuditOutput{}
		out.Body.Items = make([]AuditRecord, 0, len(recs))
		for _, r := range recs {
			out.Body.Items = append(out.Body.Items, AuditRecord(audit.ToLink(r)))
		}
		if more && len(recs) > 0 {
			out.Body.NextCursor = encodeCursor(recs[len(recs)-1].Seq)
		}
		return out, nil
	})
}

// audit is the audit trail over the server's pool, chaining under the server's keys.
func (s *Server) audit() *audit.Service {
	return &audit.Service{Pool: s.deps.Pool, Keys: s.deps.AuditKeys}
}

// storable reports whether PostgreSQL can compare with s as text.
func storable(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
