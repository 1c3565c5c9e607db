package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/secret"
)

const certsPath = "/api/v1/certs"

// Entry is an entry as the API shows it: its fields, paths and metadata, never PEM or keys.
type Entry struct {
	ID       string `json:"id" example:"internal-root-ca"`
	Name     string `json:"name" example:"Internal Root CA"`
	Type     string `json:"type" enum:"ca-bundle,client-pair,server-pair"`
	Source   string `json:"source" enum:"inline,file"`
	Notes    string `json:"notes"`
	CertPath string `json:"certPath,omitempty" doc:"For source file: the certificate file, read at every connection init" example:"/etc/loopze/certs/edge.crt"`
	KeyPath  string `json:"keyPath,omitempty" doc:"For a file-sourced pair: the private key file" example:"/etc/loopze/certs/edge.key"`
	Metadata
	ReferenceCount int       `json:"referenceCount" doc:"How many deployed node fields reference this entry"`
	Version        int64     `json:"version" doc:"Increases with every change; the ETag carries it"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
	PassphraseFile string    `json:"passphraseFile,omitempty" doc:"For a file entry with a PKCS#12 or an encrypted key: the passphrase file (never the passphrase)" example:"/etc/loopze/certs/edge.pass"`
}

// Metadata is what the store derives from material, and what its expiry means at the
// time of the answer.
type Metadata struct {
	material.Metadata
	Expired      bool `json:"expired" doc:"Whether notAfter has passed"`
	DaysToExpiry int  `json:"daysToExpiry" doc:"Whole days until notAfter; negative once expired"`
}

func metadataAt(m material.Metadata, now time.Time) Metadata {
	m = m.InUTC()
	left := m.NotAfter.Sub(now)
	return Metadata{Metadata: m, Expired: left < 0, DaysToExpiry: int(math.Floor(left.Hours() / 24))}
}

// Problem is a warning or error about one field.
type Problem struct {
	Location string `json:"location" example:"body.certPem"`
	Message  string `json:"message" example:"certificate expired on 2025-01-02T00:00:00Z"`
}

func toEntry(e *repo.Entry, now time.Time) Entry {
	return Entry{ID: e.ID, Name: e.Name, Type: string(e.Type), Source: e.Source, Notes: e.Notes,
		CertPath: e.CertPath, KeyPath: e.KeyPath, Metadata: metadataAt(e.Meta, now), ReferenceCount: e.RefCount,
		Version: e.Version, CreatedAt: e.CreatedAt.UTC(), UpdatedAt: e.UpdatedAt.UTC(), PassphraseFile: e.PassphrasePath}
}

func problems(issues []material.Issue) []Problem {
	out := make([]Problem, 0, len(issues))
	for _, is := range issues {
		out = append(out, Problem{Location: "body." + is.Field, Message: is.Message})
	}
	return out
}

// EntryBody is an entry as a client sends it. Material goes in certPem/keyPem (inline) or
// certPath/keyPath (file).
type EntryBody struct {
	ID       string  `json:"id" maxLength:"64" doc:"Slug ^[a-z0-9][a-z0-9_-]{0,63}$, unique in the tenant, immutable" example:"internal-root-ca"`
	Name     *string `json:"name,omitempty" maxLength:"200" doc:"Free text, required on create" example:"Internal Root CA"`
	Type     *string `json:"type,omitempty" enum:"ca-bundle,client-pair,server-pair" doc:"Required on create" example:"ca-bundle"`
	Source   *string `json:"source,omitempty" enum:"inline,file" doc:"Required on create" example:"inline"`
	Notes    *string `json:"notes,omitempty" maxLength:"4000" doc:"Free text, shown in lists"`
	CertPEM  *string `json:"certPem,omitempty" maxLength:"262144" doc:"Inline: PEM certificates, leaf first, then chain; a ca-bundle may hold many CAs" example:"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----"`
	KeyPEM   *string `json:"keyPem,omitempty" maxLength:"262144" doc:"Inline pairs: the PEM private key (PKCS#1, PKCS#8 or SEC1; RSA, ECDSA or Ed25519; not encrypted)"`
	CertPath *string `json:"certPath,omitempty" maxLength:"4096" doc:"File source: absolute path of the PEM certificate file" example:"/etc/loopze/certs/edge.crt"`
	KeyPath  *string `json:"keyPath,omitempty" maxLength:"4096" doc:"File source, pairs: absolute path of the PEM key file" example:"/etc/loopze/certs/edge.key"`
	CertEncodings
}

func (b *EntryBody) input() catalog.Input {
	in := catalog.Input{ID: b.ID, Name: b.Name, Type: b.Type, Source: b.Source, Notes: b.Notes,
		CertPath: b.CertPath, KeyPath: b.KeyPath}
	if b.CertPEM != nil {
		in.CertPEM = secret.PEM(*b.CertPEM)
	}
	if b.KeyPEM != nil {
		in.KeyPEM = secret.PEM(*b.KeyPEM)
	}
	return in
}

// ValidateBody is EntryBody for a validation, where the ID is checked only when given.
type ValidateBody struct {
	ID       *string `json:"id,omitempty" maxLength:"64" doc:"Checked when given, as create would" example:"internal-root-ca"`
	Name     *string `json:"name,omitempty" maxLength:"200" example:"Internal Root CA"`
	Type     *string `json:"type,omitempty" enum:"ca-bundle,client-pair,server-pair" example:"ca-bundle"`
	Source   *string `json:"source,omitempty" enum:"inline,file" example:"inline"`
	Notes    *string `json:"notes,omitempty" maxLength:"4000"`
	CertPEM  *string `json:"certPem,omitempty" maxLength:"262144"`
	KeyPEM   *string `json:"keyPem,omitempty" maxLength:"262144"`
	CertPath *string `json:"certPath,omitempty" maxLength:"4096"`
	KeyPath  *string `json:"keyPath,omitempty" maxLength:"4096"`
	CertEncodings
}

// EntryPutBody is EntryBody for PUT, where the ID comes from the path and every field is optional.
type EntryPutBody struct {
	ID       string  `json:"id,omitempty" maxLength:"64" doc:"When given, must equal the ID in the path: IDs are immutable"`
	Name     *string `json:"name,omitempty" maxLength:"200" doc:"Omitted keeps the stored name"`
	Type     *string `json:"type,omitempty" enum:"ca-bundle,client-pair,server-pair" doc:"Omitted keeps the stored type; refused with 409 while the entry is referenced"`
	Source   *string `json:"source,omitempty" enum:"inline,file" doc:"Omitted keeps the stored source; a change needs new material"`
	Notes    *string `json:"notes,omitempty" maxLength:"4000" doc:"Omitted keeps the stored notes"`
	CertPEM  *string `json:"certPem,omitempty" maxLength:"262144" doc:"New certificate PEM; omitted keeps the stored material"`
	KeyPEM   *string `json:"keyPem,omitempty" maxLength:"262144" doc:"New key PEM; omitted keeps the stored key"`
	CertPath *string `json:"certPath,omitempty" maxLength:"4096"`
	KeyPath  *string `json:"keyPath,omitempty" maxLength:"4096"`
	CertEncodings
}

// EntryOutput is one entry with its ETag.
type EntryOutput struct {
	ETag string `header:"ETag"`
	Body Entry
}

// EntrySavedOutput is the answer to a create or update: the entry and the warnings its
// material raised (saved anyway).
type EntrySavedOutput struct {
	Status   int
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	Body     struct {
		Entry
		Warnings     []Problem        `json:"warnings" doc:"Problems that did not stop the save: expired, not yet valid, broken chain, weak key, non-CA in a bundle"`
		Verification *VerificationOut `json:"verification,omitempty" doc:"With verifyWith: whether the pair chains to that ca-bundle"`
	}
}

func (s *Server) saved(res *catalog.Result) *EntrySavedOutput {
	out := &EntrySavedOutput{Status: http.StatusOK, ETag: etag(res.Entry.Version)}
	if res.Created {
		out.Status = http.StatusCreated
		out.Location = certsPath + "/" + url.PathEscape(res.Entry.ID)
	}
	out.Body.Entry = toEntry(res.Entry, time.Now())
	out.Body.Warnings = problems(res.Warnings)
	out.Body.Verification = toVerification(res.Verification)
	return out
}

// EntryIDParam is the {id} path parameter.
type EntryIDParam struct {
	ID string `path:"id" maxLength:"64" doc:"Entry ID" example:"internal-root-ca"`
}

// ListInput are the listing's query parameters.
type ListInput struct {
	Limit              int    `query:"limit" default:"100" minimum:"1" maximum:"500" doc:"Page size"`
	Cursor             string `query:"cursor" maxLength:"200" doc:"nextCursor of the previous page"`
	Type               string `query:"type" enum:"ca-bundle,client-pair,server-pair" doc:"Only entries of this type"`
	Source             string `query:"source" enum:"inline,file" doc:"Only entries of this source"`
	ExpiringWithinDays int    `query:"expiringWithinDays" minimum:"-1" maximum:"36500" default:"-1" doc:"Only entries whose notAfter is within this many days (expired ones included); -1, the default, applies no filter"`
	Q                  string `query:"q" maxLength:"200" doc:"Case-insensitive text search over id, name, subject, issuer and notes"`
}

// ListOutput is a page of entries, sorted by ID.
type ListOutput struct {
	Body entryPage
}

func encodeCursor(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return &ErrorBody{status: http.StatusBadRequest, Title: http.StatusText(http.StatusBadRequest),
			Message: "cursor is not one this API returned", Errors: []*ErrorDetail{{Location: "query.cursor", Message: "malformed cursor"}}}
	}
	return nil
}

// ReferencesOutput lists the deployed nodes that reference an entry.
type ReferencesOutput struct {
	Body struct {
		References []Reference `json:"references"`
		Total      int         `json:"total" doc:"How many references there are in all"`
		NextCursor string      `json:"nextCursor,omitempty"`
	}
}

// ValidateOutput is the preview of an entry: what Create would derive, without saving.
type ValidateOutput struct {
	Body struct {
		Valid        bool             `json:"valid"`
		Metadata     *Metadata        `json:"metadata,omitempty" doc:"Derived from the leaf certificate; absent when invalid"`
		Warnings     []Problem        `json:"warnings"`
		Errors       []Problem        `json:"errors"`
		Verification *VerificationOut `json:"verification,omitempty" doc:"With verifyWith: whether the pair chains to that ca-bundle"`
	}
}

func registerCerts(api huma.API, s *Server) {
	tags := []string{"certificates"}

	huma.Register(api, secured(huma.Operation{
		OperationID: "listCerts", Method: http.MethodGet, Path: certsPath, Tags: tags,
		Summary:     "List entries",
		Description: "Entries of the caller's tenant sorted by ID, with cursor pagination and filters. Never returns PEM or keys.",
		Errors:      []int{http.StatusBadRequest, http.StatusUnprocessableEntity},
	}, auth.Viewer), func(ctx context.Context, in *ListInput) (*ListOutput, error) {
		p := principalFrom(ctx)
		f := repo.ListFilter{Type: in.Type, Source: in.Source, Limit: in.Limit, Search: in.Q}
		if in.Cursor != "" {
			if err := decodeCursor(in.Cursor, &f.After); err != nil {
				return nil, err
			}
		}
		now := time.Now()
		if in.ExpiringWithinDays >= 0 {
			by := now.Add(time.Duration(in.ExpiringWithinDays) * 24 * time.Hour)
			f.ExpiringBy = &by
		}
		entries, more, err := s.deps.Catalog.List(ctx, p.Tenant, f)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		out := &ListOutput{}
		out.Body.Items = make([]Entry, 0, len(entries))
		for _, e := range entries {
			out.Body.Items = append(out.Body.Items, toEntry(e, now))
		}
		if more && len(entries) > 0 {
			out.Body.NextCursor = encodeCursor(entries[len(entries)-1].ID)
		}
		return out, nil
	})

	huma.Register(api, secured(huma.Operation{
		OperationID: "getCert", Method: http.MethodGet, Path: certsPath + "/{id}", Tags: tags,
		Summary:     "Get one entry",
		Description: "Metadata and paths of one entry, with its ETag. Never returns PEM or keys: to replace material, upload it again.",
		Errors:      []int{http.StatusNotFound},
	}, auth.Viewer), func(ctx context.Context, in *struct {
		EntryIDParam
		IfNoneMatch string `header:"If-None-Match" maxLength:"1024" doc:"ETag of the version the caller holds: 304 while it is current"`
	}) (*EntryOutput, error) {
		e, err := s.deps.Catalog.Get(ctx, principalFrom(ctx).Tenant, in.ID)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		if err := notModified(in.IfNoneMatch, etag(e.Version)); err != nil {
			return nil, err
		}
		return &EntryOutput{ETag: etag(e.Version), Body: toEntry(e, time.Now())}, nil
	})
	declareNotModified(api.OpenAPI().Paths[certsPath+"/{id}"].Get)

	huma.Register(api, secured(huma.Operation{
		OperationID: "listCertReferences", Method: http.MethodGet, Path: certsPath + "/{id}/references", Tags: tags,
		Summary:     "List the deployed nodes that reference an entry",
		Description: "In (flow, node, field) order, paged: the same list a refused DELETE carries.",
		Errors:      []int{http.StatusBadRequest, http.StatusNotFound},
	}, auth.Viewer), func(ctx context.Context, in *struct {
		EntryIDParam
		Limit  int    `query:"limit" default:"1000" minimum:"1" maximum:"5000"`
		Cursor string `query:"cursor" maxLength:"1000"`
	}) (*ReferencesOutput, error) {
		var after *repo.RefCursor
		if in.Cursor != "" {
			after = &repo.RefCursor{}
			if err := decodeCursor(in.Cursor, after); err != nil {
				return nil, err
			}
		}
		refs, total, err := s.deps.Catalog.References(ctx, principalFrom(ctx).Tenant, in.ID, after, in.Limit+1)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		out := &ReferencesOutput{}
		out.Body.Total = total
		if len(refs) > in.Limit {
			refs = refs[:in.Limit]
			last := refs[len(refs)-1]
			out.Body.NextCursor = encodeCursor(repo.RefCursor{FlowID: last.FlowID, NodeID: last.NodeID, Field: last.Field})
		}
		out.Body.References = toReferences(refs)
		return out, nil
	})

	huma.Register(api, secured(derives(huma.Operation{
		OperationID: "createCert", Method: http.MethodPost, Path: certsPath, Tags: tags,
		Summary:       "Create an entry",
		Description:   "Validates the material, derives its metadata and stores it (inline PEM encrypted at rest). Expired or not-yet-valid certificates are saved with a warning.",
		DefaultStatus: http.StatusCreated,
		Errors:        []int{http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity},
	}), auth.Editor), func(ctx context.Context, in *struct{ Body EntryBody }) (*EntrySavedOutput, error) {
		input := in.Body.input()
		if err := in.Body.apply(&input); err != nil {
			return nil, err
		}
		res, err := s.deps.Catalog.Create(ctx, principalFrom(ctx).Tenant, input)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		return s.saved(res), nil
	})

	huma.Register(api, secured(derives(huma.Operation{
		OperationID: "updateCert", Method: http.MethodPut, Path: certsPath + "/{id}", Tags: tags,
		Summary: "Update an entry (or create it)",
		Description: "Replaces the fields given; omitted fields and omitted material keep their stored values, new material re-derives the metadata. " +
			"The ID is immutable. A type change is refused with 409 while the entry is referenced. An unknown ID is created (201). " +
			"Send If-Match with the ETag to refuse a lost update (412); If-Match: * updates only an entry that exists, " +
			"If-None-Match: * creates only an entry that does not (412 otherwise).",
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity},
	}), auth.Editor), func(ctx context.Context, in *struct {
		EntryIDParam
		IfMatch     string `header:"If-Match" maxLength:"1024" doc:"ETag of the version being replaced, or * for any version of an existing entry"`
		IfNoneMatch string `header:"If-None-Match" maxLength:"1024" doc:"* to create only: 412 when the entry exists"`
		Body        EntryPutBody
	}) (*EntrySavedOutput, error) {
		if in.Body.ID != "" && in.Body.ID != in.ID {
			return nil, newError(http.StatusUnprocessableEntity, "the entry is not valid",
				&ErrorDetail{Location: "body.id", Message: "IDs are immutable: the body's id must equal the path's (" + in.ID + ")"})
		}
		pre, err := entryPrecondition(in.IfMatch, in.IfNoneMatch)
		if err != nil {
			return nil, err
		}
		b := EntryBody{ID: in.ID, Name: in.Body.Name, Type: in.Body.Type, Source: in.Body.Source, Notes: in.Body.Notes,
			CertPEM: in.Body.CertPEM, KeyPEM: in.Body.KeyPEM, CertPath: in.Body.CertPath, KeyPath: in.Body.KeyPath}
		input := b.input()
		if err := in.Body.apply(&input); err != nil {
			return nil, err
		}
		res, err := s.deps.Catalog.Put(ctx, principalFrom(ctx).Tenant, input, pre)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		return s.saved(res), nil
	})

	huma.Register(api, secured(huma.Operation{
		OperationID: "deleteCert", Method: http.MethodDelete, Path: certsPath + "/{id}", Tags: tags,
		Summary: "Delete an entry",
		Description: "Removes the store entry; file contents on disk are never touched. Refused with 409 while the saved workspace references the entry; " +
			"the body lists every reference (the first 1,000, with totalReferences when there are more).",
		DefaultStatus: http.StatusNoContent,
		Errors:        []int{http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed},
	}, auth.Editor), func(ctx context.Context, in *struct {
		EntryIDParam
		IfMatch string `header:"If-Match" maxLength:"1024" doc:"ETag of the version being deleted, or * for any version"`
	}) (*struct{}, error) {
		pre, err := entryPrecondition(in.IfMatch, "")
		if err != nil {
			return nil, err
		}
		if err := s.deps.Catalog.Delete(ctx, principalFrom(ctx).Tenant, in.ID, pre); err != nil {
			return nil, s.mapError(ctx, err)
		}
		return nil, nil
	})

	huma.Register(api, secured(derives(huma.Operation{
		OperationID: "validateCert", Method: http.MethodPost, Path: certsPath + "/validate", Tags: tags,
		Summary:     "Validate an entry without saving it",
		Description: "Parses exactly as create would and returns the derived metadata, warnings and errors. Never persists anything.",
		Errors:      []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity},
	}), auth.Editor), func(ctx context.Context, in *struct{ Body ValidateBody }) (*ValidateOutput, error) {
		v := in.Body
		// A probe of material alone: the entry's ID is not being asked about, so a
		// well-formed stand-in takes its place (validation reads no stored entry by it).
		b := EntryBody{ID: "material-probe", Name: v.Name, Type: v.Type, Source: v.Source, Notes: v.Notes,
			CertPEM: v.CertPEM, KeyPEM: v.KeyPEM, CertPath: v.CertPath, KeyPath: v.KeyPath, CertEncodings: v.CertEncodings}
		if v.ID != nil {
			b.ID = *v.ID
		}
		input := b.input()
		if err := b.apply(&input); err != nil {
			return nil, err
		}
		pv, err := s.deps.Catalog.ValidateWith(ctx, principalFrom(ctx).Tenant, input)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		meta, warnings, errs := pv.Metadata, pv.Warnings, pv.Errors
		out := &ValidateOutput{}
		out.Body.Valid = len(errs) == 0
		if meta != nil {
			m := metadataAt(*meta, time.Now())
			out.Body.Metadata = &m
		}
		out.Body.Warnings = problems(warnings)
		out.Body.Errors = problems(errs)
		out.Body.Verification = toVerification(pv.Verification)
		return out, nil
	})

	registerCertificateExport(api, s, tags)
}

func toReferences(refs []repo.Reference) []Reference {
	out := make([]Reference, 0, len(refs))
	for _, r := range refs {
		out = append(out, Reference{FlowID: r.FlowID, NodeID: r.NodeID, NodeType: r.NodeType, Field: r.Field})
	}
	return out
}
