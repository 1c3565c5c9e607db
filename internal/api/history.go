package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
)

// Version is one version of an entry's history as the API shows it: the entry's fields
// and metadata as they were, never PEM or keys.
type Version struct {
	Version      int64     `json:"version" doc:"Number of this version in the entry ID's history, from 1; the {version} of the routes below"`
	Action       string    `json:"action" enum:"create,update,delete,restore,baseline" doc:"The change that made this version; baseline is the state of an entry older than its history, recorded at its first change"`
	EntryVersion int64     `json:"entryVersion" doc:"The entry's version (ETag) this state had; for a delete, the version deleted"`
	RestoredFrom int64     `json:"restoredFrom,omitempty" doc:"For a restore: the version brought back"`
	ChangedAt    time.Time `json:"changedAt"`
	ChangedBy    string    `json:"changedBy" doc:"Subject of the token (or the operator command) that made the change"`
	Name         string    `json:"name"`
	Type         string    `json:"type" enum:"ca-bundle,client-pair,server-pair"`
	Source       string    `json:"source" enum:"inline,file"`
	Notes        string    `json:"notes"`
	CertPath     string    `json:"certPath,omitempty"`
	KeyPath      string    `json:"keyPath,omitempty"`
	material.Metadata
}

func toVersion(v *repo.Version) Version {
	return Version{
		Version: v.Version, Action: v.Action, EntryVersion: v.EntryVersion, RestoredFrom: v.RestoredFrom,
		ChangedAt: v.ChangedAt.UTC(), ChangedBy: v.ChangedBy, Name: v.Name, Type: string(v.Type), Source: v.Source,
		Notes: v.Notes, CertPath: v.CertPath, KeyPath: v.KeyPath, Metadata: v.Meta.InUTC(),
	}
}

// VersionSummary is a version as the listing shows it: what tells versions apart (the
// change, who and when, the fingerprint and expiry), without the rest of the metadata,
// which GET .../versions/{version} returns.
type VersionSummary struct {
	Version           int64     `json:"version"`
	Action            string    `json:"action" enum:"create,update,delete,restore,baseline"`
	EntryVersion      int64     `json:"entryVersion"`
	RestoredFrom      int64     `json:"restoredFrom,omitempty"`
	ChangedAt         time.Time `json:"changedAt"`
	ChangedBy         string    `json:"changedBy"`
	Name              string    `json:"name"`
	Type              string    `json:"type" enum:"ca-bundle,client-pair,server-pair"`
	Source            string    `json:"source" enum:"inline,file"`
	FingerprintSHA256 string    `json:"fingerprintSha256"`
	NotAfter          time.Time `json:"notAfter"`
}

func toVersionSummary(v *repo.VersionSummary) VersionSummary {
	return VersionSummary{
		Version: v.Version, Action: v.Action, EntryVersion: v.EntryVersion, RestoredFrom: v.RestoredFrom,
		ChangedAt: v.ChangedAt.UTC(), ChangedBy: v.ChangedBy, Name: v.Name, Type: string(v.Type), Source: v.Source,
		FingerprintSHA256: v.FingerprintSHA256, NotAfter: v.NotAfter.UTC(),
	}
}

// appendJSON writes v as encoding/json does, fields in their order (see jsonAppender).
func (v *VersionSummary) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"version":`...)
	b = appendJSONInt(b, v.Version)
	b = append(b, `,"action":`...)
	b = appendJSONString(b, v.Action)
	b = append(b, `,"entryVersion":`...)
	b = appendJSONInt(b, v.EntryVersion)
	if v.RestoredFrom != 0 {
		b = append(b, `,"restoredFrom":`...)
		b = appendJSONInt(b, v.RestoredFrom)
	}
	b = append(b, `,"changedAt":`...)
	if b, err = appendJSONTime(b, v.ChangedAt); err != nil {
		return b, err
	}
	b = append(b, `,"changedBy":`...)
	b = appendJSONString(b, v.ChangedBy)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, v.Name)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, v.Type)
	b = append(b, `,"source":`...)
	b = appendJSONString(b, v.Source)
	b = append(b, `,"fingerprintSha256":`...)
	b = appendJSONString(b, v.FingerprintSHA256)
	b = append(b, `,"notAfter":`...)
	if b, err = appendJSONTime(b, v.NotAfter); err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// VersionParam is the {id} and {version} path parameters.
type VersionParam struct {
	EntryIDParam
	Version int64 `path:"version" minimum:"1" maximum:"9007199254740991" doc:"Version number, from the history listing" example:"3"`
}

// VersionsOutput is a page of an entry's history, newest first.
type VersionsOutput struct {
	Body VersionsOutputBody
}

// VersionsOutputBody is the page itself. It writes its own JSON: a page holds up to
// 1,000 versions.
type VersionsOutputBody struct {
	Items      []VersionSummary `json:"items"`
	NextCursor string           `json:"nextCursor,omitempty" doc:"Pass as cursor for the next (older) page; absent on the last page"`
}

// appendJSON writes p as encoding/json does (see jsonAppender).
func (p VersionsOutputBody) appendJSON(b []byte) ([]byte, error) {
	return appendJSONPage(b, p.Items, p.NextCursor, func(b []byte, v *VersionSummary) ([]byte, error) { return v.appendJSON(b) })
}

// VersionOutput is one version.
type VersionOutput struct {
	Body Version
}

func registerHistory(api huma.API, s *Server) {
	tags := []string{"history"}

	huma.Register(api, secured(huma.Operation{
		OperationID: "listCertVersions", Method: http.MethodGet, Path: certsPath + "/{id}/versions", Tags: tags,
		Summary: "List an entry's versions",
		Description: "Every create, update, delete and restore of the entry kept a version; newest first, with cursor pagination. " +
			"Each item summarises its version; GET one version for all of its metadata. " +
			"A deleted entry's history stays readable until the retention prunes it. Never returns PEM or keys.",
		Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, auth.Viewer), func(ctx context.Context, in *struct {
		EntryIDParam
		Limit  int    `query:"limit" default:"50" minimum:"1" maximum:"1000" doc:"Page size"`
		Cursor string `query:"cursor" maxLength:"200" doc:"nextCursor of the previous page"`
	}) (*VersionsOutput, error) {
		var before int64
		if in.Cursor != "" {
			if err := decodeCursor(in.Cursor, &before); err != nil {
				return nil, err
			}
			if before < 1 {
				return nil, decodeCursor("!", &before)
			}
		}
		vs, more, err := s.deps.Catalog.Versions(ctx, principalFrom(ctx).Tenant, in.ID, before, in.Limit)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		out := &VersionsOutput{}
		out.Body.Items = make([]VersionSummary, 0, len(vs))
		for i := range vs {
			out.Body.Items = append(out.Body.Items, toVersionSummary(&vs[i]))
		}
		if more && len(vs) > 0 {
			out.Body.NextCursor = encodeCursor(vs[len(vs)-1].Version)
		}
		return out, nil
	})

	huma.Register(api, secured(huma.Operation{
		OperationID: "getCertVersion", Method: http.MethodGet, Path: certsPath + "/{id}/versions/{version}", Tags: tags,
		Summary:     "Get one version of an entry",
		Description: "The entry's fields and metadata as this version kept them. Never returns PEM or keys.",
		Errors:      []int{http.StatusNotFound},
	}, auth.Viewer), func(ctx context.Context, in *VersionParam) (*VersionOutput, error) {
		v, err := s.deps.Catalog.Version(ctx, principalFrom(ctx).Tenant, in.ID, in.Version)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		return &VersionOutput{Body: toVersion(v)}, nil
	})

	huma.Register(api, secured(derives(huma.Operation{
		OperationID: "restoreCertVersion", Method: http.MethodPost, Path: certsPath + "/{id}/versions/{version}/restore", Tags: tags,
		Summary: "Restore a version of an entry",
		Description: "Makes a new version whose fields and material are those of the given one; the references to the entry are untouched, " +
			"so a type change is refused with 409 while the entry is referenced. A deleted entry is recreated (201). " +
			"File-sourced material is read from the version's paths again. Send If-Match with the entry's ETag to refuse a lost update (412).",
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed, http.StatusUnprocessableEntity},
	}), auth.Editor), func(ctx context.Context, in *struct {
		VersionParam
		IfMatch string `header:"If-Match" maxLength:"1024" doc:"ETag of the entry version being replaced"`
	}) (*EntrySavedOutput, error) {
		pre, err := entryPrecondition(in.IfMatch, "")
		if err != nil {
			return nil, err
		}
		res, err := s.deps.Catalog.Restore(ctx, principalFrom(ctx).Tenant, in.ID, in.Version, pre)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		return s.saved(res), nil
	})
}
